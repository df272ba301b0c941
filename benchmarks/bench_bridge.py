"""The legacy bridge's cost over a raw ZeroMQ REQ/REP exchange, and backup snapshot speed.

Bridge (one request at a time, a REP echo agent in a thread on loopback):

- ``raw``: a zmq.asyncio REQ socket sending the same JSON envelope and reading the reply (floor);
- ``bridge``: :meth:`replay.bridge.LegacyBridge.call` (envelope with uuid4 and ISO time, the
  agent's breaker, metrics, reply parsing);
- ``bridge+events``: the same with every call recorded as a ``legacy.bridge_call.v1`` event
  (background, batched) on an embedded nats-server.

Backup: ``N`` events in ``MVS_EVENTS``, then the stream snapshot used by ``mvs backup``
against the baseline of reading every message back with a pull consumer (what an export of
the log would cost), in the same run.

    .venv/bin/python -m benchmarks.bench_bridge [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import zmq
import zmq.asyncio
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mvs.bus import connect
from mvs.natsserver import NatsServer
from mvs.publisher import EventPublisher
from replay.bridge import LegacyBridge, legacy_envelope
from replay.snapshots import snapshot_stream
from streams.catalog import encode_event, subject_of
from streams.definitions import apply_streams
from streams.events.memory import MemoryWritten


def _echo_agent(stop: threading.Event, ready: list[int]) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    ready.append(sock.bind_to_random_port("tcp://127.0.0.1"))
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stop.is_set():
        if dict(poller.poll(20)):
            env = json.loads(sock.recv())
            sock.send(json.dumps({"status": "success", "echo": env.get("action")}).encode())
    sock.close(linger=0)
    ctx.term()


def _stats(name: str, samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    print(f"  {name:<14} p50 {p50:7.3f} ms   p95 {p95:7.3f} ms   "
          f"mean {statistics.fmean(samples) * 1000:7.3f} ms")
    return p50, p95


async def _bridge(n: int, url: str, address: str) -> None:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.REQ)
    sock.connect(address)
    raw = []
    for _ in range(n):
        t = time.perf_counter()
        await sock.send(json.dumps(legacy_envelope("EmotionEngine", "get_emotional_state"))
                        .encode())
        json.loads(await sock.recv())
        raw.append(time.perf_counter() - t)
    sock.close(linger=0)
    ctx.term()

    plain = []
    async with LegacyBridge({"EmotionEngine": address}) as bridge:
        for _ in range(n):
            t = time.perf_counter()
            await bridge.call("EmotionEngine", "get_emotional_state")
            plain.append(time.perf_counter() - t)

    nc = await connect(url)
    js = nc.jetstream()
    await apply_streams(js)
    events = EventPublisher(js)
    recorded = []
    async with LegacyBridge({"EmotionEngine": address}, emit=events.emit) as bridge:
        for _ in range(n):
            t = time.perf_counter()
            await bridge.call("EmotionEngine", "get_emotional_state")
            recorded.append(time.perf_counter() - t)
    await events.close()
    await nc.close()

    print(f"bridge round trip, {n} requests each")
    r50, r95 = _stats("raw", raw)
    b50, b95 = _stats("bridge", plain)
    e50, e95 = _stats("bridge+events", recorded)
    print(f"  overhead over raw: bridge p50 x{b50 / r50:.2f} (+{b50 - r50:.3f} ms) "
          f"p95 x{b95 / r95:.2f}; with events p50 x{e50 / r50:.2f} (+{e50 - r50:.3f} ms) "
          f"p95 x{e95 / r95:.2f}")


async def _backup(n: int, url: str, out: Path) -> None:
    nc = await connect(url)
    js = nc.jetstream()
    acks = []
    for i in range(n):
        e = MemoryWritten(memory_id=f"m{i}", content=f"memory number {i} " * 8, event_id=f"e{i}")
        acks.append(await js.publish_async(subject_of(e), encode_event(e),
                                           headers={"Nats-Msg-Id": e.event_id}))
        if len(acks) >= 5000:
            await asyncio.gather(*acks)
            acks = []
    await asyncio.gather(*acks)
    info = await js.stream_info("MVS_EVENTS")

    t = time.perf_counter()
    psub = await js.pull_subscribe(
        "mvs.evt.>", durable=None, stream="MVS_EVENTS",
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
    got = 0
    while got < n:
        got += len(await psub.fetch(2000, timeout=5.0))
    await psub.unsubscribe()
    read_s = time.perf_counter() - t

    t = time.perf_counter()
    snap = await snapshot_stream(nc, "MVS_EVENTS", out / "MVS_EVENTS.tar.s2")
    snap_s = time.perf_counter() - t
    await nc.close()
    mb = info.state.bytes / 1e6
    print(f"backup of {n} events ({mb:.1f} MB stored)")
    print(f"  read every message (baseline): {read_s:6.2f} s  {mb / read_s:7.1f} MB/s")
    print(f"  stream snapshot (mvs backup):  {snap_s:6.2f} s  {mb / snap_s:7.1f} MB/s  "
          f"-> {snap.size / 1e6:.1f} MB file, x{read_s / snap_s:.1f} faster than the baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run")
    args = parser.parse_args()
    n_calls, n_events = (300, 20_000) if args.quick else (3000, 200_000)
    stop = threading.Event()
    port: list[int] = []
    agent = threading.Thread(target=_echo_agent, args=(stop, port), daemon=True)
    agent.start()
    while not port:
        time.sleep(0.01)
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp) / "js",
                                                          port=0) as server:
        asyncio.run(_bridge(n_calls, server.url, f"tcp://127.0.0.1:{port[0]}"))
        asyncio.run(_backup(n_events, server.url, Path(tmp)))
    stop.set()
    agent.join()


if __name__ == "__main__":
    main()
