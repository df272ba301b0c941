"""How fast a feature-flag change reaches another process, against a raw NATS round trip.

The plan asks that a flag set by an operator reach every service in under a second. Here a
reader process holds a watching :class:`mvs.flags.FlagStore` (as every service process does)
and answers on a core NATS subject as soon as it sees each new value. In the same run:

- ``raw``: a request/reply round trip to that process (the floor: two hops over the server);
- ``set``: :meth:`FlagStore.set` alone (KV put plus the ``flag.set.v1`` event, both acked);
- ``set -> seen``: from the start of ``set`` until the reader says it sees the value.

    .venv/bin/python -m benchmarks.bench_flags [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mvs.bus import connect
from mvs.flags import FlagStore
from mvs.natsserver import NatsServer
from mvs.procs import die_with_parent_hook
from mvs.publisher import EventPublisher
from streams.definitions import apply_streams

FLAG = "use_mvs_routing"
ECHO, SEEN, READY = "bench.flags.echo", "bench.flags.seen", "bench.flags.ready"


def _value(k: int, n: int) -> float:
    return (k + 1) / (n + 1)  # distinct for every k, all within [0, 1]


async def _reader(url: str, n: int) -> None:
    nc = await connect(url, name="bench-flags-reader")
    store = await FlagStore.open(nc.jetstream())

    async def echo(msg: object) -> None:
        await msg.respond(msg.data)  # type: ignore[attr-defined]

    await nc.subscribe(ECHO, cb=echo)
    await nc.publish(READY, b"")
    for k in range(n):
        if not await store.wait_for(FLAG, _value(k, n), timeout=30.0):
            raise SystemExit(f"reader: value {k} never arrived")
        await nc.publish(SEEN, str(k).encode())
    await nc.flush()
    await store.stop()
    await nc.close()


def _stats(name: str, samples: list[float]) -> float:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1000
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000
    print(f"  {name:<12} p50 {p50:7.3f} ms   p95 {p95:7.3f} ms   max {ordered[-1] * 1000:7.3f} ms")
    return p95


async def _writer(url: str, n: int) -> None:
    nc = await connect(url, name="bench-flags-writer")
    js = nc.jetstream()
    await apply_streams(js)
    events = EventPublisher(js)
    store = await FlagStore.open(js, events=events, defaults={FLAG: 0.0}, watch=False)
    ready = await nc.subscribe(READY)
    seen = await nc.subscribe(SEEN)
    await nc.flush()  # both subscriptions are on the server before the reader can answer
    reader = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_flags", "--reader", url, "-n", str(n)],
        cwd=Path(__file__).resolve().parents[1], preexec_fn=die_with_parent_hook(),
    )
    try:
        await ready.next_msg(timeout=60.0)
        raw = []
        for k in range(n):
            t = time.perf_counter()
            await nc.request(ECHO, str(k).encode(), timeout=10.0)
            raw.append(time.perf_counter() - t)
        set_only, reached = [], []
        for k in range(n):
            t = time.perf_counter()
            await store.set(FLAG, _value(k, n), actor="bench")
            set_only.append(time.perf_counter() - t)
            got = await seen.next_msg(timeout=30.0)
            reached.append(time.perf_counter() - t)
            if int(got.data) != k:
                raise SystemExit(f"reader saw value {int(got.data)} where {k} was set")
        if reader.wait(timeout=30) != 0:
            raise SystemExit(f"the reader process exited with {reader.returncode}")
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        await store.stop()
        await events.close()
        await nc.close()
    print(f"flag propagation to another process, {n} sets")
    raw95 = _stats("raw", raw)
    _stats("set", set_only)
    seen95 = _stats("set -> seen", reached)
    print(f"  set -> seen p95 x{seen95 / raw95:.1f} a raw round trip; "
          f"the plan's bound (1 s) is x{1000 / seen95:.0f} that")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run")
    parser.add_argument("-n", type=int, default=None, help="number of sets")
    parser.add_argument("--reader", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n or (200 if args.quick else 2000)
    if args.reader:
        asyncio.run(_reader(args.reader, n))
        return 0
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp) / "js",
                                                          port=0) as server:
        asyncio.run(_writer(server.url, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
