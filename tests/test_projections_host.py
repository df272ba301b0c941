"""The projection host: rebuild and swap, and the query/export CLI while running and stopped."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mvs.bus import connect, jetstream
from mvs.errors import ProjectionError
from projections.host import ProjectionHost
from projections.intake import IntakeProcess, read_frame, write_frame
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
    # stopped: each projection's lag is what its subjects hold past its stored position
    asyncio.run(publish(nats_url, [m.MemoryAccessed(memory_id="a")], poison=False))
    done = mvs(tmp_path, nats_url, "projections", "ls")
    assert done.returncode == 0, done.stderr
    lags = {line.split()[0]: line.split()[2] for line in done.stdout.splitlines()[1:]}
    assert (lags["memory"], lags["history"], lags["requests"], lags["twin"]) == ("1", "1", "0", "0")


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


def test_one_feed_gives_each_projection_its_domains_and_moves_idle_positions_on(
    nats_url: str, tmp_path: Path
) -> None:
    """Every projection folds its own events from the one consumer; one that got none stores
    where the log stood, so the next start does not read the log back from sequence 1."""
    from projections.feed import ADVANCE_EVERY

    memories = [m.MemoryWritten(memory_id=f"m{i}", content="x") for i in range(30)]

    async def main() -> None:
        await publish(nats_url, memories, poison=False)
        nc = await connect(nats_url)
        js = jetstream(nc)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False) as host:
            assert host.feed is not None and host.feed.start_seq == 1
            await host.catch_up()
            assert host.runners["memory"].events_applied == 30
            assert host.runners["history"].events_applied == 30
            assert host.runners["requests"].events_applied == 0
            # below ADVANCE_EVERY a projection with nothing to fold stores nothing yet ...
            assert ADVANCE_EVERY > 30 and host.runners["requests"].last_seq == 0
            assert await host.position("requests") == (0, True)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False) as host:
            # ... but a clean stop does: every projection resumes after seq 30
            assert {r.last_seq for r in host.runners.values()} == {30}
            assert host.feed is not None and host.feed.start_seq == 31
            names = {c.name for c in await js.consumers_info("MVS_EVENTS")}
            assert names == {"proj_feed"}
            await publish(nats_url, [rq.RequestReceived(request_id="r9", text="hi")], False)
            await host.wait_for(31)
            rows = host.query("SELECT count(*) FROM requests")
            assert host.runners["requests"].events_applied == 1 and rows
        await nc.close()

    asyncio.run(main())


def test_a_projection_finer_than_a_domain_is_refused_by_the_feed() -> None:
    import duckdb
    import pytest

    from mvs.errors import ProjectionError
    from projections.feed import Feed
    from projections.memory import MemoryProjection
    from projections.runner import ProjectionRunner

    class Narrow(MemoryProjection):
        subjects = ("mvs.evt.memory.m1",)

    runner = ProjectionRunner(Narrow(), duckdb.connect(), None)  # type: ignore[arg-type]
    with pytest.raises(ProjectionError, match=r"memory: subject filter 'mvs.evt.memory.m1'"):
        Feed(None, [runner])  # type: ignore[arg-type]


def test_small_shares_are_held_back_then_folded_in_full_below_the_floor(
    nats_url: str, tmp_path: Path
) -> None:
    """With batches of 10, a request among 99 memories is a share too small for a fold of
    its own: it waits for the next share (or the end of the log), and the feed's floor does not
    rise past a batch it falls in before it is folded; every event still lands, the lag counts
    what is above the floor, and a restart resumes cleanly."""
    events: list[Event] = []
    for i in range(99):
        events.append(m.MemoryWritten(memory_id=f"m{i}", content="x"))
        if i % 33 == 0:
            events.append(rq.RequestReceived(request_id=f"r{i}", text="hi"))
    seen: list[int] = []

    async def main() -> None:
        await publish(nats_url, events, poison=False)
        nc = await connect(nats_url)
        js = jetstream(nc)
        path = tmp_path / "mvs.duckdb"
        async with ProjectionHost(nc, path, serve=False, batch=10) as host:
            runner = host.runners["requests"]
            apply = runner.apply
            runner.apply = lambda msgs, prepared=None: (  # type: ignore[method-assign]
                seen.append(len(msgs)), apply(msgs, prepared)
            )[1]
            await host.catch_up()
            assert host.feed is not None and await host.feed.idle()
            ci = await js.consumer_info("MVS_EVENTS", "proj_feed")
            assert host.feed.floor == ci.delivered.stream_seq == len(events)
            # the lag: nothing pending and everything delivered folded; messages delivered
            # above the floor (not folded by every projection yet) count
            assert {s.lag for s in await host.status()} == {0}
            host.feed.floor -= 5
            assert {s.lag for s in await host.status()} == {5}
            assert not await host.feed.idle()
            host.feed.floor += 5
            assert host.query("SELECT 1")  # the host still answers
            assert host.db is not None
            rows = host.db.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()
            assert rows == [("r0",), ("r33",), ("r66",)]
            assert host.runners["memory"].events_applied == 99
        # three requests in over ten batches: folded together, not one small fold each
        assert sum(seen) == 3 and len(seen) < 3
        async with ProjectionHost(nc, path, serve=False, batch=10) as host:
            assert host.feed is not None and host.feed.start_seq == len(events) + 1
            await publish(nats_url, [rq.RequestReceived(request_id="r100", text="hi")], False)
            await host.wait_for(len(events) + 1)
            assert host.db is not None
            assert host.db.execute("SELECT count(*) FROM requests").fetchall() == [(4,)]
        await nc.close()

    asyncio.run(main())


def test_consumers_have_one_filter_subject_and_skip_other_domains(
    nats_url: str, tmp_path: Path
) -> None:
    """Several filter subjects on one consumer make nats-server deliver at 1-2k events/s: a
    feed or a runner that takes several domains reads everything and skips the rest."""
    from projections.runner import ProjectionRunner
    from projections.twin import TwinProjection

    events = sample_events()

    async def main() -> None:
        await publish(nats_url, events, poison=False)
        nc = await connect(nats_url)
        js = jetstream(nc)
        n = len(events)
        async with ProjectionHost(
            nc, tmp_path / "a.duckdb", names=("memory", "requests"), serve=False
        ) as host:
            ci = await js.consumer_info("MVS_EVENTS", "proj_feed")
            assert ci.config.filter_subject == "mvs.evt.>" and not ci.config.filter_subjects
            await host.catch_up()
            assert host.db is not None
            assert host.db.execute("SELECT count(*) FROM requests").fetchall() == [(1,)]
            assert host.runners["memory"].events_applied == 5
            assert host.runners["requests"].events_applied == 3
        async with ProjectionHost(nc, tmp_path / "b.duckdb", names=("memory",), serve=False):
            ci = await js.consumer_info("MVS_EVENTS", "proj_feed")
            assert ci.config.filter_subject == "mvs.evt.memory.>"
        async with ProjectionHost(nc, tmp_path / "c.duckdb", serve=False, memory_mb=200) as h:
            assert h.db is not None  # DuckDB's caches are bounded by the config's limit
            limit = h.db.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
            assert limit == "190.7 MiB"  # 200 MB

        import duckdb

        db = duckdb.connect(str(tmp_path / "twin.duckdb"))
        runner = ProjectionRunner(TwinProjection(), db, js)
        runner.prepare()
        await runner.subscribe()
        try:
            ci = await js.consumer_info("MVS_EVENTS", runner.durable)
            assert ci.config.filter_subject == "mvs.evt.>" and not ci.config.filter_subjects
            await runner.drain()
        finally:
            await runner.close()
            await js.delete_consumer("MVS_EVENTS", runner.durable)
        # the seven twin events folded, the others skipped, the position past the last event
        assert runner.events_applied == 7 and runner.last_seq == n
        assert db.execute("SELECT count(*) FROM dead_letters").fetchall() == [(0,)]
        assert db.execute("SELECT service FROM services").fetchall() == [("stt",)]
        await nc.close()

    asyncio.run(main())


def test_applied_event_ids_are_kept_as_hashes_and_a_false_maybe_loses_nothing(
    nats_url: str, tmp_path: Path
) -> None:
    """An event published again beyond the duplicate window is skipped by its id; the ids
    are held as 8-byte hashes, and a hash that is there without its id (a collision, a
    rolled-back batch) costs a lookup, never the event."""
    import duckdb

    from projections.memory import MemoryProjection
    from projections.runner import ProjectionRunner

    first = m.MemoryWritten(memory_id="a", content="one")
    second = m.MemoryWritten(memory_id="b", content="two")

    async def main() -> None:
        nc = await connect(nats_url)
        js = jetstream(nc)
        await apply_streams(js)
        db = duckdb.connect(str(tmp_path / "mvs.duckdb"))
        runner = ProjectionRunner(MemoryProjection(), db, js)
        runner.prepare()
        await runner.subscribe()
        try:
            await js.publish(subject_of(first), encode_event(first))
            await runner.drain()
            # the second event's hash is already there, as after a collision
            runner.applied.add(runner.applied.hash_columns(db, [[second.event_id]]))
            for ev in (first, second):  # no Msg-Id: the first one gets a new seq
                await js.publish(subject_of(ev), encode_event(ev))
            await runner.drain()
        finally:
            await runner.close()
        rows = db.execute("SELECT memory_id, content FROM memories ORDER BY 1").fetchall()
        assert rows == [("a", "one"), ("b", "two")]
        applied = db.execute("SELECT event_id, seq FROM applied_memory ORDER BY seq").fetchall()
        assert applied == [(first.event_id, 1), (second.event_id, 3)]
        assert runner.events_applied == 2 and runner.last_seq == 3
        await nc.close()

    asyncio.run(main())


def test_after_a_catch_up_the_host_checkpoints_and_drops_its_decoded_events(
    nats_url: str, tmp_path: Path
) -> None:
    """Folded rows wait in DuckDB's WAL (and memory) until a checkpoint; once the log is read
    the host checkpoints and lets go of the events it decoded."""
    path = tmp_path / "mvs.duckdb"
    wal = Path(str(path) + ".wal")

    async def main() -> None:
        await publish(nats_url, sample_events(), poison=False)
        nc = await connect(nats_url)
        async with ProjectionHost(nc, path, serve=False) as host:
            await host.catch_up()
            for _ in range(100):
                if not host.decoder._entries and (not wal.exists() or not wal.stat().st_size):
                    break
                await asyncio.sleep(0.1)
            assert not host.decoder._entries
            assert not wal.exists() or wal.stat().st_size == 0
            assert host.query("SELECT 1")  # and it goes on serving
        await nc.close()

    asyncio.run(main())


def _checksums(path: Path) -> dict[str, tuple[int, int]]:
    import duckdb

    from projections.base import checksum

    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        # positions and dead letters carry the time they were written
        skip = {"projection_positions"}
        out = {t: checksum(con, t) for t in tables if t not in skip and t != "dead_letters"}
        out["dead_letters"] = (
            len(con.execute("SELECT seq, projection, reason FROM dead_letters").fetchall()), 0
        )
        return out
    finally:
        con.close()


def test_intake_frames_carry_batches_and_arrow_tables_and_refuse_a_pipe_out_of_step() -> None:
    table = pa.table({"seq": pa.array([1, 2, 3], pa.uint64()), "payload": ["{}", None, "[]"]})
    frames = [
        ("credit", 3),
        ("batch", 3, "ack", [1, 2, 3], ["a", "b", "a"], [b"x", b"", b"\x00" * 70000],
         {"history": (None, (["e1", "e2"], {"events": table})), "memory": ([0, 2], None)}),
        ("stop",),
    ]
    pipe = io.BytesIO()
    for frame in frames:
        write_frame(pipe, frame)
    sent = pipe.getvalue()
    pipe.seek(0)
    got = [read_frame(pipe) for _ in frames]
    assert got[0] == frames[0] and got[2] == frames[2]
    assert got[1][:6] == frames[1][:6]
    assert got[1][6]["memory"] == ([0, 2], None)
    ids, tables = got[1][6]["history"][1]
    assert ids == ["e1", "e2"] and tables["events"].equals(table)
    with pytest.raises(EOFError):
        read_frame(pipe)
    cut = io.BytesIO(sent[: len(sent) // 2])  # the other side died in the middle of a frame
    assert read_frame(cut) == frames[0]
    with pytest.raises(EOFError):
        read_frame(cut)
    with pytest.raises(ProjectionError, match="out of step"):
        read_frame(io.BytesIO(b"not a frame header at all"))


def test_the_intake_process_gives_the_tables_of_a_feed_read_in_process(
    nats_url: str, tmp_path: Path
) -> None:
    """History, requests and memory are laid out by the intake process and folded as laid
    out; the tables (dead letters included) equal those of a host reading the log itself."""
    events = sample_events() + [rq.RequestReceived(request_id=f"r{i}", text="x") for i in range(50)]

    async def main() -> None:
        await publish(nats_url, events)
        nc = await connect(nats_url)
        js = jetstream(nc)
        # an event published twice beyond the duplicate window: a new seq, the same id
        await js.publish(subject_of(events[-1]), encode_event(events[-1]))
        for intake in (True, False):
            path = tmp_path / f"intake-{intake}.duckdb"
            async with ProjectionHost(nc, path, serve=False, intake=intake, batch=10) as host:
                await host.catch_up()
                prepared = {n: r.events_prepared for n, r in host.runners.items()}
                applied = {n: r.events_applied for n, r in host.runners.items()}
            if intake:
                # the batch with the poison falls back to the ordinary fold, and so does the
                # share with the duplicate (which drops it); the others are folded as laid out
                assert 0 < prepared["history"] < applied["history"] == len(events) + 1
                assert prepared["requests"] == applied["requests"] == 53
                assert 0 < prepared["memory"] <= applied["memory"]
                assert prepared["twin"] == 0
            else:
                assert not any(prepared.values())
        assert _checksums(tmp_path / "intake-True.duckdb") == _checksums(
            tmp_path / "intake-False.duckdb"
        )
        await nc.close()

    asyncio.run(main())


def test_an_intake_process_that_dies_is_started_again_and_nothing_is_lost(
    nats_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        await publish(nats_url, sample_events(), poison=False)
        nc = await connect(nats_url)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False) as host:
            await host.catch_up()
            assert host.feed is not None
            source = host.feed._source
            assert isinstance(source, IntakeProcess) and source.proc is not None
            source.proc.kill()
            later = [m.MemoryWritten(memory_id=f"late{i}", content="x") for i in range(20)]
            await publish(nats_url, later, poison=False)
            await host.catch_up(timeout=30)
            assert host.feed._source is not source  # a new intake process
            assert host.db is not None
            rows = host.db.execute("SELECT count(*) FROM memories WHERE memory_id LIKE 'late%'")
            assert rows.fetchall() == [(20,)]
            events = host.db.execute("SELECT count(*), count(DISTINCT seq) FROM events")
            n = len(sample_events()) + 20
            assert events.fetchall() == [(n, n)]
        await nc.close()

    asyncio.run(main())


def test_an_intake_process_is_reading_the_log_when_its_start_returns(
    nats_url: str, tmp_path: Path
) -> None:
    """Its start (imports, connection) is not left to the first catch-up; one that cannot
    connect is reported by the next read, without start() waiting for it."""
    from projections.intake import IntakeSpec

    async def main() -> None:
        nc = await connect(nats_url)
        async with ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False) as host:
            assert host.feed is not None
            source = host.feed._source
            assert isinstance(source, IntakeProcess) and source._ready.is_set()
            assert source._queue.empty()  # bound, not failed
        await nc.close()
        dead = IntakeProcess(IntakeSpec(
            url="nats://127.0.0.1:1", durable="nobody", batch=10, idle_timeout=0.5,
            runners={"history": ("history", "", None)},
        ))
        started = time.monotonic()
        await dead.start()
        assert time.monotonic() - started < IntakeProcess.READY_TIMEOUT
        with pytest.raises(ProjectionError, match="intake process failed"):
            await dead.next(True, 10.0)
        await dead.stop()

    asyncio.run(main())

def test_an_intake_process_that_cannot_run_leaves_the_writer_reading_the_log(
    nats_url: str, tmp_path: Path
) -> None:
    """An intake that fails again and again (here: it is told a NATS URL nobody serves) is
    given up on after a few tries; the writer reads the log itself and nothing is lost."""

    async def main() -> None:
        await publish(nats_url, sample_events(), poison=False)
        nc = await connect(nats_url)
        host = ProjectionHost(nc, tmp_path / "mvs.duckdb", serve=False, url="nats://127.0.0.1:99999")
        async with host:
            await host.catch_up(timeout=60)
            assert host.feed is not None and not isinstance(host.feed._source, IntakeProcess)
            assert host.runners["history"].events_applied == len(sample_events())
        await nc.close()

    asyncio.run(main())


def test_the_writer_runs_duckdb_with_the_threads_it_is_given(tmp_path: Path) -> None:
    import duckdb

    from projections.runner import open_db

    one = open_db(str(tmp_path / "one.duckdb"))
    assert one.execute("SELECT current_setting('threads')").fetchone() == (1,)
    one.close()
    default = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()
    every = open_db(str(tmp_path / "every.duckdb"), threads=0)
    assert every.execute("SELECT current_setting('threads')").fetchone() == default
    every.close()
