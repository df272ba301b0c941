"""Running ``--verify``: wait for the projections, then compare, or fall back to the log.

If no other process owns the DuckDB file, the projections are run here (a
:class:`projections.host.ProjectionHost` without its query service) until they have folded
the replayed events, and the comparison reads their tables. If another process owns the file
(the system is up), DuckDB cannot be opened a second time: the event log itself is folded
instead, and the report says so.

:class:`EarlyVerification` starts that work *with* the replay, in a child process: the
projections fold the events while they are published, and the legacy side is read
meanwhile, instead of both starting after the last publish (for a million memories that was
more than half the run). The replay tells the child the last sequence it wrote; the child
waits for the projections to reach it, compares and sends the report back.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import nats.errors
from nats.aio.client import Client

from mvs import tasks
from mvs.errors import MvsError, ProjectionError
from replay.detect import discover
from replay.engine import Progress, ReplayOptions, SourceResult, replay
from replay.verify import VerifyReport, fold_event_log, load_expected, projection_views, verify
from replay.verify_specs import SPEC_BY_ENTITY, Spec
from streams.definitions import EVENTS_STREAM

__all__ = [
    "EarlyVerification",
    "load_expected_beside",
    "replay_and_verify",
    "run_verification",
    "wait_for_running_projections",
]


# Sources this large are read in a child process while the projections fold (below this,
# starting a process costs more than it saves).
LOAD_ELSEWHERE_BYTES = 8_000_000


def _load_into_file(path: str, sources: list[str], opts: ReplayOptions) -> tuple[
    list[str], Counter[str]
]:
    """Child process body: the expected side into the DuckDB file ``path``."""
    con = duckdb.connect(path)
    try:
        entities, findings = load_expected(con, [Path(s) for s in sources], opts, temp=False)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return list(entities), findings


def load_expected_beside(
    con: duckdb.DuckDBPyConnection, sources: list[Path], opts: ReplayOptions
) -> tuple[dict[str, Spec], Counter[str]]:
    """:func:`load_expected` into ``con``; large sources are read in a child process.

    Reading and mapping a million legacy rows is about 30 s of Python: beside the projections'
    fold in this process they would take turns on one core. The child writes the ``exp_``
    tables to a scratch DuckDB file, which is then copied here into temp tables.
    """
    size = 0
    for src in discover(sources, opts.fmt):
        with contextlib.suppress(OSError):
            size += src.path.stat().st_size
    if size < LOAD_ELSEWHERE_BYTES:
        return load_expected(con, sources, opts)
    with tempfile.TemporaryDirectory(prefix="mvs-verify-") as tmp:
        path = str(Path(tmp) / "expected.duckdb")
        ctx = mp.get_context("spawn")  # never fork a process that runs an event loop
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            names, findings = pool.submit(
                _load_into_file, path, [str(s) for s in sources], opts
            ).result()
        quoted = path.replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS mvs_expected (READ_ONLY)")
        try:
            for name in names:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE exp_{name} AS "
                    f"SELECT * FROM mvs_expected.exp_{name}"
                )
        finally:
            con.execute("DETACH mvs_expected")
    return {name: SPEC_BY_ENTITY[name] for name in names}, findings


async def _verify_in_host(
    nc: Client, duckdb_path: Path, sources: list[Path], opts: ReplayOptions,
    last_seq: Callable[[], Awaitable[int]], timeout: float, notes: list[str],
) -> VerifyReport:
    """Run the projections here, read the legacy side meanwhile, compare at ``last_seq()``."""
    from projections.host import ProjectionHost

    t0 = time.perf_counter()
    async with ProjectionHost(nc, duckdb_path, serve=False) as host:
        assert host.db is not None
        # Temp tables live in this connection only; the legacy side is read while the
        # projections catch up, not after.
        con = host.db.cursor()
        try:
            loading = asyncio.ensure_future(
                asyncio.to_thread(load_expected_beside, con, sources, opts)
            )
            try:
                seq = await last_seq()
                await host.wait_for(seq, timeout=timeout)  # fails at once if the feed dies
            finally:
                entities, findings = await loading
            t1 = time.perf_counter()
            notes.append(
                f"projections caught up to seq {seq} and the legacy side was read "
                f"in {t1 - t0:.1f}s"
            )
            projection_views(con, entities)
            report = verify(con, entities, findings, against="projections", notes=notes)
            report.notes.append(f"compared in {time.perf_counter() - t1:.1f}s")
        finally:
            con.close()
        return report


async def run_verification(
    nc: Client, duckdb_path: Path, sources: list[Path], opts: ReplayOptions, last_seq: int,
    *, timeout: float = 600.0, notes: list[str] | None = None,
) -> VerifyReport:
    from projections.query import running_host

    notes = list(notes or [])
    owner = running_host(duckdb_path)
    if owner is None:
        async def upto() -> int:
            return last_seq

        try:
            return await _verify_in_host(nc, duckdb_path, sources, opts, upto, timeout, notes)
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


# The verifying process (and the legacy reader it starts) yields the CPU to the replay: on
# 2 cores all of them at once are more than the cores give, and the replay is what the
# user waits for first; the folding catches up once the replay is done.
VERIFY_NICE = 10


def _early_child(
    url: str, duckdb_path: str, sources: list[str], opts: ReplayOptions, conn: Connection,
    timeout: float,
) -> None:
    """Child process body: verify, with the last sequence read from ``conn``; send the report."""
    from mvs.bus import connect

    with contextlib.suppress(OSError):
        os.nice(VERIFY_NICE)

    async def main() -> VerifyReport:
        nc = await connect(url, name="mvs-verify")
        try:
            async def upto() -> int:
                # EOF: the parent is gone (killed); nothing to verify for anyone
                return int(await asyncio.to_thread(conn.recv))

            notes = ["the projections folded while the replay published (a child process)"]
            return await _verify_in_host(
                nc, Path(duckdb_path), [Path(s) for s in sources], opts, upto, timeout, notes
            )
        finally:
            await nc.close()

    try:
        report: VerifyReport | str = tasks.run(main())
    except EOFError:
        return
    except Exception as exc:  # every failure goes back to the parent, which falls back
        report = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(BrokenPipeError, EOFError):  # the parent is gone
        conn.send(report)


class EarlyVerification:
    """``--verify`` begun with the replay (see the module docstring).

    ``start`` returns ``None`` when a running process owns the projections (then
    :func:`run_verification` verifies against the event log after the replay).
    """

    def __init__(self, proc: Any, conn: Connection) -> None:
        self.proc = proc
        self.conn = conn

    @classmethod
    def start(
        cls, url: str, duckdb_path: Path, sources: list[Path], opts: ReplayOptions,
        *, timeout: float = 600.0,
    ) -> EarlyVerification | None:
        from projections.query import running_host

        if running_host(duckdb_path) is not None:
            return None
        ctx = mp.get_context("spawn")  # never fork a process that runs an event loop
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_early_child,
            args=(url, str(duckdb_path), [str(s) for s in sources], opts, child, timeout),
            # not a daemon: it starts a reader process of its own; close() always ends it, and
            # it leaves by itself when this process dies (its pipe reads EOF)
            daemon=False, name="mvs-verify",
        )
        proc.start()
        child.close()
        return cls(proc, parent)

    async def finish(self, last_seq: int, *, timeout: float = 900.0) -> VerifyReport:
        """Tell the child where the replay ended; its report (``ProjectionError`` if none)."""
        try:
            if not self.conn.poll(0):  # (a child that failed early has said why already)
                self.conn.send(last_seq)
            ready = await asyncio.to_thread(self.conn.poll, timeout)
            got = self.conn.recv() if ready else f"no report in {timeout:.0f}s"
        except (BrokenPipeError, EOFError, OSError):
            got = f"the verifying process ended (exit code {self.proc.exitcode})"
        finally:
            self.close()
        if isinstance(got, str):
            raise ProjectionError(f"early verification failed: {got}")
        assert isinstance(got, VerifyReport)
        return got

    def close(self) -> None:
        self.conn.close()
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)


async def replay_and_verify(
    nc: Client, url: str, duckdb_path: Path, sources: list[Path], opts: ReplayOptions,
    *, progress: Callable[[Progress], None] | None = None,
) -> tuple[list[SourceResult], VerifyReport]:
    """``mvs replay --verify``: replay with :class:`EarlyVerification` running beside it.

    If the early verification cannot be had (a running process owns the projections) or
    fails, :func:`run_verification` verifies after the replay, and the report says why.
    """
    early = EarlyVerification.start(url, duckdb_path, sources, opts)
    try:
        results = await replay(nc, sources, opts, progress=progress)
        info = await nc.jetstream(timeout=30.0).stream_info(EVENTS_STREAM)
        last = int(info.state.last_seq)
        notes: list[str] = []
        if early is not None:
            try:
                return results, await early.finish(last)
            except ProjectionError as exc:
                notes.append(str(exc))
        report = await run_verification(nc, duckdb_path, sources, opts, last, notes=notes)
        return results, report
    finally:
        if early is not None:
            early.close()


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
