"""Event store and event log append cost against raw nats-py publishes, same run, same bytes.

Starts two embedded nats-servers on loopback (JetStream default, and ``sync_interval:
always``) and measures on each:

- raw ``js.publish`` one at a time (latency p50/p95) and raw ``publish_async`` pipelined
  (throughput), on the same payload bytes as the event store writes;
- the eventsourcing recorder (``mvs.eventstore``): single-event appends, and appends of
  ``--batch`` events as one atomic batch;
- :class:`mvs.eventlog.EventLog`: ``append``, ``append_many`` (pipelined) and
  ``append_batch`` (atomic);
- reading a 10-event aggregate by batch direct get versus an ordered consumer (why the
  recorder reads with direct gets).

Ratios are store / raw: throughput ratios want to be high (aim: batched >= 0.8x raw
pipelined), latency ratios low (aim: single-append p95 <= 1.5x raw).

    .venv/bin/python -m benchmarks.bench_eventstore [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import msgspec
from eventsourcing.persistence import StoredEvent
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig

from mvs.bus import connect
from mvs.eventlog import EventLog
from mvs.eventstore import JetStreamApplicationRecorder
from mvs.eventstore_runtime import NatsRuntime, StoreNames
from mvs.natsserver import NatsServer
from streams.base import Event
from streams.catalog import encode_event
from streams.definitions import apply_streams
from streams.events.memory import MemoryWritten

__all__ = ["main"]

_EVENT: Event = MemoryWritten(
    memory_id="bench", content="the kettle is in the second cupboard " * 3
)
PAYLOAD = encode_event(_EVENT)


@dataclass
class Figure:
    name: str
    ops: int  # events written
    seconds: float
    latencies: list[float]  # seconds per call (a call may write several events)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        lat = ""
        if self.latencies:
            lat = f"  p50 {self.pct(0.5) * 1e6:8.0f} us  p95 {self.pct(0.95) * 1e6:8.0f} us"
        return f"  {self.name:<42} {self.rate:>10.0f} ev/s{lat}"


Variant = tuple[int, Callable[[int], Awaitable[object]]]  # events per call, the call


async def _interleave(calls: int, variants: dict[str, Variant]) -> dict[str, Figure]:
    """Run the variants round-robin, ``calls`` times each, so that they share the noise of
    a busy machine instead of one variant getting a quiet minute and the next a loud one."""
    lat: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(calls):
        for name, (_, fn) in variants.items():
            t0 = time.perf_counter()
            await fn(i)
            lat[name].append(time.perf_counter() - t0)
    return {
        name: Figure(name, ops * calls, sum(lat[name]), lat[name])
        for name, (ops, _) in variants.items()
    }


def _interleave_sync(
    calls: int, variants: dict[str, tuple[int, Callable[[int], float | None]]]
) -> dict[str, Figure]:
    """Like :func:`_interleave` for blocking calls; a call may return its own duration (a
    raw baseline timed inside the event loop, without the thread hop)."""
    lat: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(calls):
        for name, (_, fn) in variants.items():
            t0 = time.perf_counter()
            inner = fn(i)
            lat[name].append(inner if inner is not None else time.perf_counter() - t0)
    return {
        name: Figure(name, ops * calls, sum(lat[name]), lat[name])
        for name, (ops, _) in variants.items()
    }


def _events(n: int, keys: int = 100) -> list[Event]:
    return [
        msgspec.structs.replace(_EVENT, event_id=uuid.uuid4().hex, memory_id=f"m{i % keys}")
        for i in range(n)
    ]


def _slices(events: list[Event], size: int) -> Callable[[int], list[Event]]:
    return lambda i: events[i * size : (i + 1) * size]


async def _raw_and_log(url: str, singles: int, pipelined: int, batch: int) -> dict[str, Figure]:
    nc = await connect(url, name="bench-raw")
    js = nc.jetstream()
    await apply_streams(js)
    await js.add_stream(StreamConfig(name="BENCH_RAW", subjects=["bench.raw.>"]))
    log = EventLog(js)
    for _ in range(50):  # warm up the connection, the streams and the log's reply inbox
        await js.publish("bench.raw.warm", PAYLOAD)
    await log.append_many(_events(50))

    def raw_pipelined(size: int) -> Callable[[int], Awaitable[None]]:
        async def run(_: int) -> None:
            for i in range(size):
                await js.publish_async(f"bench.raw.p{i % 100}", PAYLOAD)
            await js.publish_async_completed()

        return run

    def many(events: list[Event], size: int) -> Callable[[int], Awaitable[object]]:
        part = _slices(events, size)
        return lambda i: log.append_many(part(i))

    def atomic(events: list[Event], size: int) -> Callable[[int], Awaitable[object]]:
        part = _slices(events, size)
        return lambda i: log.append_batch(part(i))

    out: dict[str, Figure] = {}
    one = _events(singles)
    figs = await _interleave(singles, {
        "raw js.publish (1 at a time)":
            (1, lambda i: js.publish(f"bench.raw.s{i % 100}", PAYLOAD)),
        "EventLog.append (1 at a time)": (1, lambda i: log.append(one[i])),
    })
    out["raw_single"], out["log_single"] = figs.values()

    figs = await _interleave(pipelined // batch, {
        f"raw publish_async (pipelined x{batch})": (batch, raw_pipelined(batch)),
        f"EventLog.append_many (x{batch})": (batch, many(_events(pipelined), batch)),
        f"EventLog.append_batch (atomic x{batch})": (batch, atomic(_events(pipelined), batch)),
    })
    out["raw_pipelined"], out["log_many"], out["log_batch"] = figs.values()

    for size in (10, 500, 1000):
        n = max(size * 3, pipelined // 3)
        n -= n % size
        figs = await _interleave(n // size, {
            f"raw publish_async (pipelined x{size})": (size, raw_pipelined(size)),
            f"EventLog.append_batch (atomic x{size})": (size, atomic(_events(n), size)),
        })
        out[f"sweep_raw_{size}"], out[f"sweep_batch_{size}"] = figs.values()

    out["read_direct"], out["read_ordered"] = await _reads(nc, max(20, singles // 20))
    await nc.close()
    return out


async def _reads(nc: Any, n: int) -> tuple[Figure, Figure]:
    """Reading one 10-event aggregate: batch direct get vs a filtered ordered consumer."""
    from mvs.eventstore_js import ReplyMux, direct_get_batch

    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name="BENCH_READ", subjects=["bench.read.>"], allow_direct=True)
    )
    for k in range(200):
        for _ in range(10):
            await js.publish_async(f"bench.read.a{k}", PAYLOAD)
    await js.publish_async_completed()
    mux = ReplyMux()
    await mux.start(nc)

    async def direct(i: int) -> None:
        msgs, _ = await direct_get_batch(
            nc, mux, "BENCH_READ", f"bench.read.a{i % 200}", batch=1000, timeout=5
        )
        assert len(msgs) == 10

    async def ordered(i: int) -> None:
        sub = await js.subscribe(
            f"bench.read.a{i % 200}", stream="BENCH_READ", ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL, config=ConsumerConfig(),
        )
        for _ in range(10):
            await sub.next_msg(timeout=5)
        await sub.unsubscribe()

    figs = await _interleave(n, {
        "read 10-event aggregate: batch direct get": (10, direct),
        "read 10-event aggregate: ordered consumer": (10, ordered),
    })
    direct_fig, ordered_fig = figs.values()
    return direct_fig, ordered_fig


def _recorder(url: str, singles: int, pipelined: int, batch: int) -> dict[str, Figure]:
    runtime = NatsRuntime(url, name="bench-es")
    try:
        recorder = JetStreamApplicationRecorder(
            runtime, StoreNames(f"Bench{uuid.uuid4().hex[:8]}"), contiguous=True
        )
        recorder.create_table()
        js = runtime.nc.jetstream()
        ids = [uuid4() for _ in range(100)]
        versions = dict.fromkeys(ids, 0)

        def next_event(i: int) -> StoredEvent:
            oid = ids[i % len(ids)]
            versions[oid] += 1
            return StoredEvent(oid, versions[oid], "bench.Event", PAYLOAD)

        async def raw_one(i: int) -> float:
            t0 = time.perf_counter()
            await js.publish(f"bench.raw.r{i % 100}", PAYLOAD)
            return time.perf_counter() - t0

        async def raw_pipelined(_: int) -> float:
            t0 = time.perf_counter()
            for i in range(batch):
                await js.publish_async(f"bench.raw.q{i % 100}", PAYLOAD)
            await js.publish_async_completed()
            return time.perf_counter() - t0

        def in_loop(coro: Callable[[int], Coroutine[Any, Any, float]]) -> Callable[[int], float]:
            return lambda i: runtime.call(coro(i), doing="raw publish")

        def insert(events: list[StoredEvent]) -> None:
            recorder.insert_events(events)

        fresh = [uuid4() for _ in range(pipelined // batch)]

        def insert_batch(i: int) -> None:
            insert([StoredEvent(fresh[i], v, "bench.Event", PAYLOAD) for v in range(1, batch + 1)])

        for i in range(200):  # warm up; every aggregate now exists and is remembered
            insert([next_event(i)])
        out: dict[str, Figure] = {}
        figs = _interleave_sync(singles, {
            "raw js.publish (in the store's loop)": (1, in_loop(raw_one)),
            "recorder.insert_events (1 event)": (1, lambda i: insert([next_event(i)])),
        })
        out["es_raw_single"], out["es_single"] = figs.values()
        figs = _interleave_sync(pipelined // batch, {
            f"raw publish_async x{batch} (store's loop)": (batch, in_loop(raw_pipelined)),
            f"recorder.insert_events (atomic x{batch})": (batch, insert_batch),
        })
        out["es_raw_pipelined"], out["es_batch"] = figs.values()
        return out
    finally:
        runtime.close()


def _ratio(store: Figure, raw: Figure, *, latency: bool) -> str:
    if latency:
        p95, p50 = store.pct(0.95) / raw.pct(0.95), store.pct(0.5) / raw.pct(0.5)
        return f"p95 {p95:.2f}x raw, p50 {p50:.2f}x"
    return f"{store.rate / raw.rate:.2f}x raw throughput"


def _report(title: str, f: dict[str, Figure]) -> None:
    print(f"\n{title}")
    for fig in f.values():
        print(fig.line())
    print("  ratios (store / raw, same run):")
    rows = [
        ("recorder single append", "es_single", "es_raw_single", True),
        ("EventLog.append", "log_single", "raw_single", True),
        ("recorder atomic batch", "es_batch", "es_raw_pipelined", False),
        ("EventLog.append_batch", "log_batch", "raw_pipelined", False),
        ("EventLog.append_many", "log_many", "raw_pipelined", False),
    ]
    for label, store, raw, latency in rows:
        print(f"    {label:<28} {_ratio(f[store], f[raw], latency=latency)}")
    for size in (10, 500, 1000):
        label = f"append_batch x{size}"
        ratio = _ratio(f[f"sweep_batch_{size}"], f[f"sweep_raw_{size}"], latency=False)
        print(f"    {label:<28} {ratio} (pipelined x{size})")
    direct, ordered = f["read_direct"], f["read_ordered"]
    print(f"    {'aggregate read':<28} direct get {ordered.pct(0.5) / direct.pct(0.5):.1f}x "
          "faster (p50) than an ordered consumer")


def _measure(sync_always: bool, singles: int, pipelined: int, batch: int) -> dict[str, Figure]:
    with tempfile.TemporaryDirectory(prefix="mvs-bench-") as tmp:
        server = NatsServer(store_dir=Path(tmp), port=0, sync_always=sync_always)
        url = server.start()
        try:
            figures = asyncio.run(_raw_and_log(url, singles, pipelined, batch))
            figures.update(_recorder(url, singles, pipelined, batch))
            return figures
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_eventstore", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    parser.add_argument("--batch", type=int, default=100, help="events per batched append")
    parser.add_argument("--no-sync", action="store_true", help="skip the sync_interval run")
    args = parser.parse_args(argv)
    singles, pipelined = (300, 3000) if args.quick else (3000, 30000)
    default = _measure(False, singles, pipelined, args.batch)
    _report(f"JetStream default (fsync in the background), {singles} singles, "
            f"{pipelined} batched", default)
    if not args.no_sync:
        synced = _measure(True, singles, pipelined, args.batch)
        _report("JetStream sync_interval: always (fsync before every ack)", synced)
        print("\ncost of sync_interval: always (synced / default):")
        for key in ("raw_single", "raw_pipelined", "es_single", "es_batch", "log_batch"):
            d, s = default[key], synced[key]
            print(f"  {d.name:<42} throughput {s.rate / d.rate:5.2f}x  "
                  f"p50 {s.pct(0.5) / d.pct(0.5):5.2f}x  p95 {s.pct(0.95) / d.pct(0.95):5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
