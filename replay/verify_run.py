"""Running ``--verify``: wait for the projections, then compare, or fall back to the log.

If no other process owns the DuckDB file, the projections are run here (a
:class:`projections.host.ProjectionHost` without its query service) until they have folded
the replayed events, and the comparison reads their tables. If another process owns the file
(the system is up), DuckDB cannot be opened a second time: the event log itself is folded
instead, and the report says so.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import nats.errors
from nats.aio.client import Client

from mvs.errors import MvsError, ProjectionError
from replay.engine import ReplayOptions
from replay.verify import VerifyReport, fold_event_log, load_expected, projection_views, verify

__all__ = ["run_verification", "wait_for_running_projections"]


async def _wait(host: Any, seq: int, timeout: float) -> None:
    """``host.wait_for`` in short steps, giving up as soon as a projection task has died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await host.wait_for(seq, timeout=1.0)
            return
        except ProjectionError:
            if time.monotonic() > deadline:
                raise
        tasks: dict[str, asyncio.Task[None]] = getattr(host, "_tasks", {})
        for name, task in tasks.items():
            if task.done():
                exc = task.exception() if not task.cancelled() else None
                raise ProjectionError(
                    f"projection {name} stopped ({type(exc).__name__ if exc else 'cancelled'})"
                )


async def run_verification(
    nc: Client, duckdb_path: Path, sources: list[Path], opts: ReplayOptions, last_seq: int,
    *, timeout: float = 600.0,
) -> VerifyReport:
    from projections.host import ProjectionHost
    from projections.query import running_host

    t0 = time.perf_counter()
    notes: list[str] = []
    owner = running_host(duckdb_path)
    if owner is None:
        try:
            async with ProjectionHost(nc, duckdb_path, serve=False) as host:
                assert host.db is not None
                # Temp tables live in this connection only; the legacy side is read while
                # the projections catch up, not after.
                con = host.db.cursor()
                try:
                    loading = asyncio.ensure_future(
                        asyncio.to_thread(load_expected, con, sources, opts)
                    )
                    try:
                        await _wait(host, last_seq, timeout)
                    finally:
                        entities, findings = await loading
                    t1 = time.perf_counter()
                    notes.append(
                        f"projections caught up to seq {last_seq} and the legacy side was read "
                        f"in {t1 - t0:.1f}s"
                    )
                    projection_views(con, entities)
                    report = verify(con, entities, findings, against="projections",
                                    notes=notes)
                    report.notes.append(f"compared in {time.perf_counter() - t1:.1f}s")
                finally:
                    con.close()
                return report
        except (MvsError, duckdb.Error, TimeoutError, nats.errors.Error) as exc:
            # The projections failing is their bug to fix; the replay can still be verified.
            reason = str(exc) or type(exc).__name__
            notes.append(f"projections unavailable ({reason}); verified against the event log")
    else:
        notes.append(
            f"the projections are owned by a running process ({owner}); verified against "
            "the event log instead"
        )
    con = duckdb.connect(":memory:")
    try:
        entities, findings = load_expected(con, sources, opts)
        n = await fold_event_log(nc.jetstream(timeout=30.0), con, entities)
        notes.append(f"read {n} events back from the log")
        return verify(con, entities, findings, against="the event log", notes=notes)
    finally:
        con.close()


async def wait_for_running_projections(duckdb_path: Path, *, timeout: float = 300.0) -> str:
    """If a projection host runs (the system is up), wait until it has no lag; a note."""
    from projections import query as q

    url = q.running_host(duckdb_path)
    if url is None:
        return ("no projection host runs: the projections fold these events when they start "
                "(mvs up, or mvs replay --verify)")
    t0 = time.monotonic()
    while True:
        try:
            data = await q.request(url, q.STATUS_SUBJECT, b"", timeout=10.0)
            lags = [s.get("lag") for s in msgspec.json.decode(data)]
        except (MvsError, msgspec.DecodeError, AttributeError) as exc:
            return f"could not ask the projection host for its lag: {exc}"
        if all(not lag for lag in lags):
            return f"projections caught up in {time.monotonic() - t0:.1f}s"
        if time.monotonic() - t0 > timeout:
            return f"projections still behind after {timeout:.0f}s (lag {max(lags)})"
        await asyncio.sleep(0.2)
