"""Replay throughput: a generated N-memory legacy DB replayed end to end and verified.

Baselines measured in the same run, on the same nats-server, with the same encoded bytes
(the events of the first ``--raw-sample`` records): nats-py ``publish_async`` with a
``Nats-Msg-Id`` per message (the issue's reference), and the replay's own lean pipelined
publisher without any reading or mapping. Run::

    .venv/bin/python -m benchmarks.bench_replay            # 1M memories
    .venv/bin/python -m benchmarks.bench_replay --quick    # 20k memories
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

from nats.js.api import StorageType, StreamConfig

from mvs.bus import connect
from mvs.natsserver import NatsServer
from replay.engine import ReplayOptions
from replay.publisher import PipelinedPublisher
from replay.readers.memory_db import READER
from replay.verify_run import replay_and_verify
from streams.catalog import encode_event, subject_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# The legacy DB generator lives with the tests, which use it too.
from legacy_gen import generate_memory_db

AIM_RATIO = 0.5
AIM_SECONDS_1M = 120.0


def _sample(db: Path, n: int) -> list[tuple[str, bytes, str]]:
    out = []
    for rec in itertools.islice(READER.read(db), n):
        for ev in rec.events:
            out.append((subject_of(ev), encode_event(ev), ev.event_id))
    return out


async def _raw_publish_async(url: str, msgs: list[tuple[str, bytes, str]]) -> float:
    nc = await connect(url, name="bench-raw")
    js = nc.jetstream(timeout=30.0, publish_async_max_pending=16000)
    await js.add_stream(StreamConfig(name="BENCH_RAW", subjects=["bench.raw.>"],
                                     storage=StorageType.FILE, duplicate_window=120.0))
    t0 = time.perf_counter()
    futures = []
    for subject, payload, msg_id in msgs:
        futures.append(await js.publish_async(
            "bench.raw." + subject, payload, headers={"Nats-Msg-Id": msg_id}))
    await asyncio.gather(*futures)
    dt = time.perf_counter() - t0
    await js.delete_stream("BENCH_RAW")
    await nc.close()
    return len(msgs) / dt


async def _raw_lean(url: str, msgs: list[tuple[str, bytes, str]]) -> float:
    nc = await connect(url, name="bench-lean")
    js = nc.jetstream(timeout=30.0)
    await js.add_stream(StreamConfig(name="BENCH_LEAN", subjects=["bench.lean.>"],
                                     storage=StorageType.FILE, duplicate_window=120.0))
    pub = PipelinedPublisher(nc)
    await pub.start()
    t0 = time.perf_counter()
    inflight = []
    batch = pub.new_batch()
    for subject, payload, msg_id in msgs:
        await pub.publish(batch, "bench.lean." + subject, payload, msg_id)
        if batch.sent >= 4000:
            inflight.append(batch)
            batch = pub.new_batch()
            if len(inflight) > 1:
                await pub.wait(inflight.pop(0))
    for b in [*inflight, batch]:
        await pub.wait(b)
    dt = time.perf_counter() - t0
    await pub.close()
    await js.delete_stream("BENCH_LEAN")
    await nc.close()
    return len(msgs) / dt


async def _replay_and_verify(url: str, db: Path, home: Path) -> dict[str, float | str | bool]:
    nc = await connect(url, name="bench-replay")
    try:
        # what `mvs replay --verify` runs: the projections fold while the replay publishes
        t0 = time.perf_counter()
        (res,), report = await replay_and_verify(
            nc, url, home / "mvs.duckdb", [db], ReplayOptions()
        )
        total = time.perf_counter() - t0
    finally:
        await nc.close()
    return {
        "records": res.records_read, "events": res.events_written, "replay_s": res.seconds,
        "verify_s": total - res.seconds, "verified_ok": report.ok, "against": report.against,
        "notes": "; ".join(report.notes),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k memories instead of 1M")
    ap.add_argument("-n", type=int, default=None, help="memories to generate")
    ap.add_argument("--raw-sample", type=int, default=200_000,
                    help="records whose events the raw baselines publish")
    args = ap.parse_args(argv)
    n = args.n or (20_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        tmpdir = Path(tmp)
        db = tmpdir / "unified_memory.db"
        t0 = time.perf_counter()
        stats = generate_memory_db(db, n)
        print(f"generated {stats.total_rows:,} legacy rows ({n:,} memories) "
              f"in {time.perf_counter() - t0:.1f}s, {db.stat().st_size / 1e6:.0f} MB")
        server = NatsServer(store_dir=tmpdir / "nats", port=0)
        url = server.start()
        try:
            msgs = _sample(db, min(args.raw_sample, stats.total_rows))
            raw = asyncio.run(_raw_publish_async(url, msgs))
            lean = asyncio.run(_raw_lean(url, msgs))
            print(f"raw js.publish_async (same bytes, {len(msgs):,} msgs): {raw:,.0f} msg/s")
            print(f"raw lean pipelined publish (same bytes):           {lean:,.0f} msg/s")
            del msgs
            r = asyncio.run(_replay_and_verify(url, db, tmpdir / "home"))
        finally:
            server.stop()
    rate = float(r["events"]) / float(r["replay_s"])
    total = float(r["replay_s"]) + float(r["verify_s"])
    print(f"replay: {r['records']:,} records, {r['events']:,} events in {r['replay_s']:.1f}s "
          f"= {rate:,.0f} events/s")
    print(f"verify against {r['against']}: {'OK' if r['verified_ok'] else 'MISMATCH'}, "
          f"{r['verify_s']:.1f}s after the last publish ({r['notes']})")
    ratio = rate / raw
    print(f"ratio replay / raw publish_async: {ratio:.2f}x (aim >= {AIM_RATIO}x)")
    print(f"ratio replay / raw lean publish:  {rate / lean:.2f}x")
    scaled = total * 1_000_000 / max(int(r["records"]), 1)
    print(f"replay + verify: {total:.1f}s; scaled to 1M records: {scaled:.0f}s "
          f"(aim < {AIM_SECONDS_1M:.0f}s)")
    return 0 if r["verified_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
