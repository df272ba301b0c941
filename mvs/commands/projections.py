"""``mvs projections ls|run|rebuild NAME``: the DuckDB projections of the event log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from mvs import tasks
from mvs.bus import NatsEndpoint, connect, jetstream
from mvs.config import ProjectionsConfig, load_config
from mvs.errors import ProjectionError
from mvs.settings import Settings
from projections.host import ProjectionHost, Status
from projections.query import REBUILD_SUBJECT, STATUS_SUBJECT, query, request, running_host
from projections.rebuild import RebuildReport
from projections.registry import PROJECTIONS, projection
from streams.definitions import EVENTS_STREAM


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("projections", help="list, run or rebuild the DuckDB projections")
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("ls", help="each projection's position and lag").set_defaults(func=run_ls)
    r = verbs.add_parser("run", help="run every projection in the foreground (follow mode)")
    r.add_argument("--once", action="store_true", help="catch up with the stream, then exit")
    r.set_defaults(func=run_run)
    b = verbs.add_parser("rebuild", help="rebuild a projection from sequence 0 and swap it in")
    b.add_argument("name", choices=sorted(PROJECTIONS))
    b.set_defaults(func=run_rebuild)


def _print_status(rows: list[Status]) -> None:
    print(f"{'PROJECTION':<12} {'LAST_SEQ':>10} {'LAG':>10}")
    for s in rows:
        lag = "-" if s.lag is None else str(s.lag)
        print(f"{s.projection:<12} {s.last_seq:>10} {lag:>10}")


def _host_config(settings: Settings) -> ProjectionsConfig:
    """The config's ``projections`` section (batch size, DuckDB memory limit, intake)."""
    return load_config(settings.config_path).projections


async def _offline_host(url: str, settings: Settings, fn: str, arg: str = "") -> object:
    nc = await connect(url, name="mvs-projections")
    try:
        names = (arg,) if fn == "rebuild" else None
        cfg = _host_config(settings)
        async with ProjectionHost(
            nc, settings.duckdb_path, names=names, serve=False, batch=cfg.batch,
            memory_mb=cfg.duckdb_memory_mb, intake=cfg.intake_process,
        ) as host:
            if fn == "rebuild":
                return await host.rebuild(arg)
            await host.catch_up(timeout=None)
            return await host.status()
    finally:
        await nc.close()


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    url = running_host(settings.duckdb_path)
    if url is not None:
        data = tasks.run(request(url, STATUS_SUBJECT, b""))
        _print_status(msgspec.json.decode(data, type=list[Status]))
        return 0
    # stopped: positions from the file (read-only), lag from the consumers; nothing is folded
    positions: dict[str, int] = {}
    if settings.duckdb_path.exists():
        table = query(
            settings.duckdb_path, "SELECT projection, last_seq FROM projection_positions"
        ).to_pylist()
        positions = {r["projection"]: int(r["last_seq"]) for r in table}
    with NatsEndpoint(settings) as endpoint:
        lags = tasks.run(_lags(endpoint.url, positions))
    _print_status(
        [Status(projection=n, last_seq=positions.get(n, 0), lag=lags.get(n)) for n in PROJECTIONS]
    )
    return 0


async def _lags(url: str, positions: dict[str, int]) -> dict[str, int | None]:
    """Per projection, the events of its subjects in the stream after its stored position."""
    nc = await connect(url, name="mvs-projections")
    js = jetstream(nc)
    out: dict[str, int | None] = {}
    try:
        for name in PROJECTIONS:
            subjects = list(projection(name).subjects)
            start = positions.get(name, 0) + 1
            try:
                # an ephemeral consumer counts what it would deliver; nothing is delivered
                ci = await js.add_consumer(
                    EVENTS_STREAM,
                    ConsumerConfig(
                        ack_policy=AckPolicy.NONE,
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                        opt_start_seq=start,
                        filter_subjects=subjects,
                        inactive_threshold=5.0,
                    ),
                )
                out[name] = int(ci.num_pending or 0)
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(EVENTS_STREAM, ci.name)
            except (NotFoundError, ServiceUnavailableError):
                out[name] = None
    finally:
        await nc.close()
    return out


async def _follow(url: str, settings: Settings) -> None:
    nc = await connect(url, name="mvs-projections")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        cfg = _host_config(settings)
        async with ProjectionHost(
            nc, settings.duckdb_path, url=url, batch=cfg.batch, memory_mb=cfg.duckdb_memory_mb,
            intake=cfg.intake_process,
        ) as host:
            print(f"projections running on {settings.duckdb_path}; queries on NATS {url}")
            await host.catch_up(timeout=None)
            _print_status(await host.status())
            await stop.wait()
    finally:
        await nc.close()


def run_run(args: argparse.Namespace, settings: Settings) -> int:
    if running_host(settings.duckdb_path) is not None:
        raise ProjectionError(f"a projection host already runs on {settings.duckdb_path}")
    with NatsEndpoint(settings) as endpoint:
        if args.once:
            rows = tasks.run(_offline_host(endpoint.url, settings, "catch_up"))
            assert isinstance(rows, list)
            _print_status(rows)
        else:
            tasks.run(_follow(endpoint.url, settings))
    return 0


def _print_report(report: RebuildReport) -> None:
    print(
        f"rebuilt {report.projection}: {report.events} events to seq {report.last_seq} "
        f"in {report.seconds:.2f}s"
    )
    head = ("TABLE", "OLD ROWS", "OLD CHECKSUM", "NEW ROWS", "NEW CHECKSUM")
    print(f"{head[0]:<28} {head[1]:>9} {head[2]:>40} {head[3]:>9} {head[4]:>40}")
    for table, (rows, digest) in report.old.items():
        new_rows, new_digest = report.new.get(table, (0, 0))
        print(f"{table:<28} {rows:>9} {digest:>40} {new_rows:>9} {new_digest:>40}")
    print("identical" if report.identical else "DIFFERENT (the fold changed; new tables are in)")


def run_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    url = running_host(settings.duckdb_path)
    if url is not None:
        data = tasks.run(request(url, REBUILD_SUBJECT, args.name.encode(), timeout=3600.0))
        report = msgspec.json.decode(data, type=RebuildReport)
    else:
        with NatsEndpoint(settings) as endpoint:
            result = tasks.run(_offline_host(endpoint.url, settings, "rebuild", args.name))
        assert isinstance(result, RebuildReport)
        report = result
    _print_report(report)
    return 0
