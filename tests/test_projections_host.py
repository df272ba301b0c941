"""The projection host: rebuild and swap, and the query/export CLI while running and stopped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from mvs.bus import connect, jetstream
from projections.host import ProjectionHost
from streams.base import Event
from streams.catalog import encode_event, subject_of
from streams.definitions import apply_streams
from streams.events import language as lg
from streams.events import legacy as lc
from streams.events import memory as m
from streams.events import models as md
from streams.events import requests as rq
from streams.events import system as sy

ROOT = Path(__file__).resolve().parents[1]


def sample_events() -> list[Event]:
    return [
        m.MemoryWritten(memory_id="a", content="fact", memory_type="knowledge_fact",
                        metadata={"topic": "cats"}, session_id="s"),
        m.SessionStarted(session_id="s", user_id="u"),
        m.MemoryAccessed(memory_id="a"),
        m.MemoryUpdated(memory_id="missing", content="x"),
        m.RelationshipAdded(source_memory_id="a", target_memory_id="b"),
        sy.ServiceRegistered(service="stt", host="pc", instance_id="i1"),
        sy.ServiceHealthV1(service="stt", healthy=False, detail="slow"),
        sy.HostSampled(host="pc", cpu_percent=10.0, memory_used_mb=1.0, memory_total_mb=2.0),
        sy.FeatureFlagSet(name="f", fraction=0.5),
        sy.BreakerStateChanged(service="r", dependency="cloud", from_state="closed",
                               to_state="open", failures=3),
        md.ModelLoaded(model_id="llm", kind="llm", backend="cpu", memory_mb=900.0),
        md.ModelEvicted(model_id="llm", to_make_room_for="stt", memory_mb=900.0),
        rq.RequestReceived(request_id="r1", text="hi"),
        rq.RequestStageCompleted(request_id="r1", stage="llm", duration_ms=12.5),
        rq.RequestCompleted(request_id="r1", outcome="ok", route="local_model", latency_ms=20.0),
        lg.TranslationRecorded(cache_key="k", text="hola", source_lang="es", target_lang="en",
                               translation="hello", engine="x"),
        lg.MetricRecorded(agent="a", metric_name="latency", value=1.0),
        lg.EmotionStateUpdated(session_id="s", emotion="happy"),
        lc.LegacyLogLine(agent="old", level="INFO", message="started"),
        lc.ReplayCompleted(source_format="f", source_path="p", records_read=1,
                           events_written=1, duplicates=0, rejected=0),
    ]


async def publish(url: str, events: list[Event], poison: bool = True) -> None:
    nc = await connect(url)
    js = jetstream(nc)
    await apply_streams(js)
    for ev in events:
        await js.publish(subject_of(ev), encode_event(ev), headers={"Nats-Msg-Id": ev.event_id})
    if poison:
        await js.publish("mvs.evt.twin.pc", b"not an event")
    await nc.close()


def mvs(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MVS_HOME": str(home), "MVS_NATS_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "mvs.cli", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )


async def amvs(home: Path, url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "MVS_HOME": str(home), "MVS_NATS_URL": url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mvs.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_rebuild_swaps_in_tables_with_identical_checksums(nats_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        await publish(nats_url, sample_events())
        nc = await connect(nats_url)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False) as host:
            await host.catch_up()
            for name in ("memory", "twin", "history", "requests", "learning", "legacy"):
                report = await host.rebuild(name)
                assert report.identical, (name, report.old, report.new)
                assert report.old["dead_letters"][0] == (1 if name in ("twin", "history")
                                                         else int(name == "memory"))
            # the live loop resumed on the swapped tables: later events still apply
            await publish(nats_url, [m.MemoryAccessed(memory_id="a")], poison=False)
            await host.catch_up()
            assert host.db is not None
            count = host.db.execute(
                "SELECT access_count FROM memories WHERE memory_id = 'a'").fetchall()
            assert count == [(2,)]
            tables = {r[0] for r in host.db.execute("SHOW TABLES").fetchall()}
            assert not any(t.endswith("__rebuild") for t in tables)
        await nc.close()

    asyncio.run(main())


def test_query_cli_goes_through_the_running_host_read_only(
    nats_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        await publish(nats_url, sample_events())
        nc = await connect(nats_url)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", url=nats_url) as host:
            await host.catch_up()
            rc, out, err = await amvs(
                tmp_path, nats_url, "query", "--format", "json",
                "SELECT topic, content FROM knowledge_facts",
            )
            assert rc == 0, err
            assert json.loads(out) == [{"topic": "cats", "content": "fact"}]
            rc, out, err = await amvs(tmp_path, nats_url, "query", "DELETE FROM memories")
            assert rc != 0 and "read-only" in err
            rc, out, err = await amvs(tmp_path, nats_url, "query", "SELECT nope FROM memories")
            assert rc != 0 and "Binder Error" in err and "nope" in err
            rc, out, err = await amvs(tmp_path, nats_url, "projections", "ls")
            assert rc == 0 and "memory" in out, err
            assert host.db is not None
            assert host.db.execute("SELECT count(*) FROM memories").fetchall() == [(1,)]
        await nc.close()

    asyncio.run(main())


def test_query_and_export_cli_read_the_file_when_the_system_is_stopped(
    nats_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        await publish(nats_url, sample_events())
        nc = await connect(nats_url)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False) as host:
            await host.catch_up()
        await nc.close()

    asyncio.run(main())
    done = mvs(tmp_path, nats_url, "query", "--format", "csv",
               "SELECT request_id, outcome, latency_ms FROM requests")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["request_id,outcome,latency_ms", "r1,ok,20.0"]
    done = mvs(tmp_path, nats_url, "query", "SELEC 1")
    assert done.returncode != 0 and "Parser Error" in done.stderr
    done = mvs(tmp_path, nats_url, "query", "SELECT status FROM services")
    assert done.returncode == 0 and "unhealthy" in done.stdout
    done = mvs(tmp_path, nats_url, "export", "--parquet", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    events = pq.read_table(tmp_path / "out" / "events.parquet")
    assert events.num_rows == len(sample_events())
    assert (tmp_path / "out" / "memories.parquet").exists()


def test_query_cli_reads_the_file_when_the_advertised_host_is_gone(
    nats_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        await publish(nats_url, sample_events(), poison=False)
        nc = await connect(nats_url)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False) as host:
            await host.catch_up()
        await nc.close()

    asyncio.run(main())
    # a live pid whose process serves nothing on that server: a stale advert
    (tmp_path / "projections-runtime.json").write_text(
        json.dumps({"pid": os.getpid(), "url": nats_url})
    )
    done = mvs(tmp_path, nats_url, "query", "SELECT count(*) AS n FROM events")
    assert done.returncode == 0, done.stderr
    assert str(len(sample_events())) in done.stdout


def test_pace_holds_a_runner_ahead_until_the_slowest_busy_one_comes_near() -> None:
    from projections.runner import Pace, RawMessage

    def upto(seq: int) -> list[RawMessage]:
        return [RawMessage(seq, "mvs.evt.x", b"")]

    async def go() -> None:
        pace = Pace(window=100, max_wait=5.0)
        fast, slow = object(), object()
        pace.fetched(fast, upto(500))
        pace.fetched(slow, upto(100))
        held = asyncio.ensure_future(pace.hold(fast))
        await asyncio.sleep(0.05)
        assert not held.done()  # 400 ahead of a busy sibling
        pace.fetched(slow, upto(450))
        await asyncio.wait_for(held, 1.0)
        # a caught-up sibling (an empty fetch) or one that left holds nobody back
        pace.fetched(fast, upto(900))
        pace.fetched(slow, [])
        await asyncio.wait_for(pace.hold(fast), 0.1)
        pace.fetched(slow, upto(100))
        pace.left(slow)
        await asyncio.wait_for(pace.hold(fast), 0.1)
        # never more than max_wait, whatever the sibling does
        stuck = Pace(window=1, max_wait=0.05)
        stuck.fetched(fast, upto(900))
        stuck.fetched(slow, upto(1))
        await asyncio.wait_for(stuck.hold(fast), 1.0)

    asyncio.run(go())
