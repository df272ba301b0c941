"""Projection throughput against raw ordered consumption of the same stream, and rebuild time.

    .venv/bin/python -m benchmarks.bench_projections            # 1M events
    .venv/bin/python -m benchmarks.bench_projections --quick    # 50k events

Publishes a mixed event log (memory, requests, twin, learning) into a fresh nats-server, then
measures in the same run:

* raw: an ordered push consumer reading every message of ``MVS_EVENTS`` (no decoding);
* each projection alone catching up from sequence 0 into a fresh DuckDB file;
* the whole host (all projections at once) catching up, with its intake process (the default)
  and reading the log itself (``intake_process: false``);
* ``rebuild`` of the history projection (every event) and of the memory projection.

The whole host is measured ``--repeat`` times (3 by default), each run right after a raw run
of its own: this machine's speed moves by a fifth to a third within minutes, so a ratio is
taken between neighbours, and the median of the ratios is the figure to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from mvs.bus import connect, jetstream
from mvs.natsserver import NatsServer
from projections.host import ProjectionHost
from projections.runner import BATCH
from streams.base import Event
from streams.catalog import encode_event, subject_of
from streams.definitions import EVENTS_STREAM, apply_streams
from streams.events import language as lg
from streams.events import memory as m
from streams.events import requests as rq
from streams.events import system as sy


def make_events(n: int, seed: int = 7) -> list[Event]:
    rnd = random.Random(seed)
    out: list[Event] = []
    memories = 0
    requests = 0
    while len(out) < n:
        r = rnd.random()
        if r < 0.25 or memories == 0:
            out.append(m.MemoryWritten(
                memory_id=f"m{memories}", content=f"memory {memories} " * 4,
                importance=rnd.random(), tags=["a", "b"], metadata={"topic": "t"},
                session_id=f"s{memories % 50}",
            ))
            memories += 1
        elif r < 0.40:
            out.append(m.MemoryAccessed(memory_id=f"m{rnd.randrange(memories)}"))
        elif r < 0.45:
            out.append(m.MemoryUpdated(memory_id=f"m{rnd.randrange(memories)}",
                                       importance=rnd.random()))
        elif r < 0.80:
            rid = f"r{requests}"
            requests += 1
            out.extend((
                rq.RequestReceived(request_id=rid, text="hello"),
                rq.RequestRouted(request_id=rid, task_type="chat", route="local_model"),
                rq.RequestStageCompleted(request_id=rid, stage="llm", duration_ms=12.0),
                rq.RequestCompleted(request_id=rid, outcome="ok", route="local_model",
                                    latency_ms=30.0),
            ))
        elif r < 0.90:
            out.append(sy.HostSampled(host=f"h{rnd.randrange(3)}", cpu_percent=rnd.random(),
                                      memory_used_mb=1.0, memory_total_mb=2.0))
        else:
            out.append(lg.MetricRecorded(agent="a", metric_name="lat", value=rnd.random()))
    return out[:n]


async def publish(url: str, events: list[Event]) -> float:
    nc = await connect(url, name="bench-pub")
    js = jetstream(nc)
    await apply_streams(js)
    started = time.perf_counter()
    # Core-NATS publishes into the stream subject, flushed in chunks: the stream stores them
    # in order; the ack-per-message publish path is not what this benchmark measures.
    for i, ev in enumerate(events):
        await nc.publish(subject_of(ev), encode_event(ev))
        if i % 5000 == 4999:
            await nc.flush()
    await nc.flush()
    while (await js.stream_info(EVENTS_STREAM)).state.messages < len(events):
        await asyncio.sleep(0.05)
    took = time.perf_counter() - started
    await nc.close()
    return took


async def raw_ordered(url: str, n: int) -> float:
    nc = await connect(url, name="bench-raw")
    js = jetstream(nc)
    done = asyncio.Event()
    count = 0

    async def cb(msg: object) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe("mvs.evt.>", ordered_consumer=True, cb=cb,
                             pending_msgs_limit=-1, pending_bytes_limit=-1)
    await done.wait()
    took = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    return took


async def one_projection(url: str, name: str, path: Path, batch: int) -> tuple[float, int]:
    """One projection alone, as ``mvs projections run`` would run it (a host of one)."""
    nc = await connect(url, name="bench-proj")
    host = ProjectionHost(nc, path, names=(name,), batch=batch, serve=False)
    async with host:
        started = time.perf_counter()
        await host.catch_up(timeout=None)
        took = time.perf_counter() - started
        runner = host.runners[name]
        count = runner.events_applied + runner.dead_lettered
    await nc.close()
    return took, count


async def host_run(
    url: str, path: Path, batch: int, n: int, fold_threads: int | None = None,
    intake: bool = True, rebuild: bool = True,
) -> dict[str, float]:
    nc = await connect(url, name="bench-host")
    out: dict[str, float] = {}
    host = ProjectionHost(
        nc, path, batch=batch, serve=False, fold_threads=fold_threads, intake=intake
    )
    async with host:
        started = time.perf_counter()
        await host.catch_up(timeout=None)
        out["host"] = time.perf_counter() - started
        out["prepared"] = float(sum(r.events_prepared for r in host.runners.values()))
        for name in ("history", "memory") if rebuild else ():
            started = time.perf_counter()
            report = await host.rebuild(name)
            out[f"rebuild_{name}"] = time.perf_counter() - started
            out[f"rebuild_{name}_identical"] = float(report.identical)
            out[f"rebuild_{name}_events"] = float(report.events)
    await nc.close()
    return out


async def main_async(
    n: int, batch: int, fold_threads: int | None, host_only: bool, repeat: int = 3
) -> None:
    events = make_events(n)
    with tempfile.TemporaryDirectory(prefix="bench-proj-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats", port=0)
        url = server.start()
        try:
            took = await publish(url, events)
            print(f"published {n} events in {took:.1f}s ({n / took:,.0f}/s)")
            raw = await raw_ordered(url, n)
            raw_rate = n / raw
            print(f"raw ordered consumer:          {raw_rate:>10,.0f} events/s ({raw:.2f}s)")
            for name in () if host_only else ("history", "memory", "requests", "twin"):
                secs, count = await one_projection(url, name, Path(tmp) / f"{name}.duckdb", batch)
                print(
                    f"projection {name:<10} alone:   {count / secs:>10,.0f} events/s of its own "
                    f"({count} in {secs:.2f}s); stream {n / secs:>10,.0f}/s = "
                    f"{n / secs / raw_rate:.2f}x raw"
                )
            alone = await host_run(
                url, Path(tmp) / "alone.duckdb", batch, n, fold_threads, intake=False,
                rebuild=False,
            )
            rate = n / alone["host"]
            print(
                f"all projections, one process:  {rate:>10,.0f} events/s "
                f"({alone['host']:.2f}s) = {rate / raw_rate:.2f}x raw"
            )
            ratios: list[float] = []
            rates: list[float] = []
            figures: dict[str, float] = {}
            for k in range(repeat):
                raw_rate = n / await raw_ordered(url, n)
                run = await host_run(
                    url, Path(tmp) / f"host{k}.duckdb", batch, n, fold_threads, rebuild=k == 0
                )
                figures = figures or run
                host_rate = n / run["host"]
                ratios.append(host_rate / raw_rate)
                rates.append(host_rate)
                print(
                    f"all projections (host) {k + 1}/{repeat}:   {host_rate:>10,.0f} events/s "
                    f"({run['host']:.2f}s) = {host_rate / raw_rate:.2f}x raw at "
                    f"{raw_rate:,.0f}/s just before; with the intake process, "
                    f"{run['prepared']:,.0f} events folded as it laid them out; "
                    f"{fold_threads or 'default'} fold threads"
                )
            print(
                f"all projections (host), median of {repeat}: "
                f"{statistics.median(rates):>10,.0f} events/s = "
                f"{statistics.median(ratios):.2f}x raw "
                f"(runs {min(ratios):.2f}x-{max(ratios):.2f}x)"
            )
            for name in ("history", "memory"):
                ev = figures[f"rebuild_{name}_events"]
                secs = figures[f"rebuild_{name}"]
                same = "identical" if figures[f"rebuild_{name}_identical"] else "DIFFERENT"
                print(f"rebuild {name:<8}: {ev:,.0f} events in {secs:.2f}s "
                      f"({ev / secs:,.0f}/s), checksums {same}")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k events instead of 1M")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--fold-threads", type=int, default=None,
                        help="the host's fold threads (default: one per projection)")
    parser.add_argument("--host-only", action="store_true", help="skip single projections")
    parser.add_argument("--repeat", type=int, default=3,
                        help="whole-host runs, each after a raw run of its own (default 3)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    n = args.events or (50_000 if args.quick else 1_000_000)
    asyncio.run(main_async(n, args.batch, args.fold_threads, args.host_only, args.repeat))


if __name__ == "__main__":
    main()
