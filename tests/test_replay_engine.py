"""`mvs replay` end to end against a real nats-server: counts, idempotency, SIGKILL, verify."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from legacy_gen import (
    generate_learning_dbs,
    generate_memory_db,
    generate_metrics_db,
    write_agent_log,
    write_observation_report,
)
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mvs.bus import connect
from mvs.natsserver import NatsServer
from replay.engine import ReplayOptions, SourceResult, replay
from replay.tracking import BUCKET, Position, Tracker, file_sha256, ids_after, tracking_key
from replay.verify import VerifyReport, fold_event_log, load_expected, verify
from replay.verify_run import run_verification
from replay.verify_specs import SPEC_BY_ENTITY
from streams.catalog import encode_event, subject_of
from streams.definitions import EVENTS_STREAM, apply_streams
from streams.events.memory import MemoryWritten

REPO = Path(__file__).resolve().parents[1]


def _run(url: str, sources: list[Path], **kw: Any) -> list[SourceResult]:
    async def go() -> list[SourceResult]:
        nc = await connect(url)
        try:
            return await replay(nc, sources, ReplayOptions(**kw))
        finally:
            await nc.close()

    return asyncio.run(go())


def _verify_log(url: str, sources: list[Path]) -> VerifyReport:
    async def go() -> VerifyReport:
        nc = await connect(url)
        con = duckdb.connect(":memory:")
        try:
            entities, findings = load_expected(con, sources, ReplayOptions())
            await fold_event_log(nc.jetstream(), con, entities)
            return verify(con, entities, findings, against="the event log")
        finally:
            con.close()
            await nc.close()

    return asyncio.run(go())


async def _stream_ids(url: str) -> list[str]:
    nc = await connect(url)
    try:
        js = nc.jetstream()
        return sorted(await ids_after(js, 0))
    finally:
        await nc.close()


async def _count_msgs(url: str) -> int:
    nc = await connect(url)
    try:
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
        return int(info.state.messages)
    except NotFoundError:
        return 0
    finally:
        await nc.close()


def _legacy_fixtures(folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    mem = generate_memory_db(folder / "unified_memory.db", 1500, relationships=80, groups=3)
    learn = generate_learning_dbs(folder / "learning", 25)
    metrics = generate_metrics_db(folder / "performance_metrics_pc2.db", 120)
    return {"memory": mem, "learning": learn, "metrics": metrics}


def test_generated_l1_l3_replay_then_verify_is_clean(tmp_path: Path, nats_url: str) -> None:
    stats = _legacy_fixtures(tmp_path / "legacy")
    results = _run(nats_url, [tmp_path / "legacy"])
    assert {r.format for r in results} == {"L1", "L2", "L3"}
    read = sum(r.records_read for r in results)
    rows = sum(s.total_rows for s in stats.values())
    assert read == rows
    assert sum(r.rejected for r in results) == sum(s.total_rejected for s in stats.values())
    report = _verify_log(nats_url, [tmp_path / "legacy"])
    assert report.ok, report
    by = {e.entity: e for e in report.entities}
    assert by["memories"].expected == stats["memory"].rows["memories"] - 4
    assert by["legacy_rejections"].found == sum(s.total_rejected for s in stats.values())
    # Legacy defects are findings, not failures.
    # Dangling: the generated ones, plus any parent that was itself a rejected row.
    assert report.findings["dangling_parent_id"] >= stats["memory"].ugly["dangling_parent_id"]
    assert report.findings["invalid_json_metadata"] == stats["memory"].ugly[
        "invalid_json_metadata"]
    assert report.findings["created_at_out_of_order"] > 0


def test_second_run_is_a_no_op(tmp_path: Path, nats_url: str) -> None:
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 600, relationships=20, groups=2)
    first = _run(nats_url, [db])[0]
    assert first.events_written == first.records_read > 0
    before = asyncio.run(_count_msgs(nats_url))
    second = _run(nats_url, [db])[0]
    assert second.status == "already replayed"
    assert second.events_written == 0
    assert second.skipped_already_published == first.records_read
    assert asyncio.run(_count_msgs(nats_url)) == before


def test_rerun_without_tracking_is_all_duplicates(tmp_path: Path, nats_url: str) -> None:
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 300, relationships=0, groups=1)
    first = _run(nats_url, [db])[0]

    async def forget() -> None:
        nc = await connect(nats_url)
        await nc.jetstream().delete_key_value(BUCKET)
        await nc.close()

    asyncio.run(forget())
    again = _run(nats_url, [db])[0]
    assert again.events_written == 0
    assert again.duplicates == first.events_written


def test_resume_after_lost_checkpoint_skips_what_the_log_already_holds(
    tmp_path: Path, nats_url: str
) -> None:
    """A crash after acks but before the position was written: the log is re-read."""
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 900, relationships=0, groups=1)
    first = _run(nats_url, [db], batch=200)[0]
    key = tracking_key("L1", file_sha256(db), None, None)

    async def roll_back() -> None:
        nc = await connect(nats_url)
        tracker = await Tracker.open(nc.jetstream())
        pos = await tracker.get(key)
        assert pos is not None and pos.done
        # As if the last checkpoint was after record 400 at stream seq 400.
        await tracker.put(key, Position(path=pos.path, format="L1", sha256=pos.sha256,
                                        committed=400, window=400, stream_seq=400))
        await nc.close()

    asyncio.run(roll_back())
    before = asyncio.run(_count_msgs(nats_url))
    resumed = _run(nats_url, [db], batch=200)[0]
    assert resumed.status == "resumed"
    assert resumed.events_written == 0
    assert resumed.duplicates == first.records_read - 400
    assert asyncio.run(_count_msgs(nats_url)) == before


def test_sigkill_mid_replay_then_rerun_loses_and_duplicates_nothing(
    tmp_path: Path, nats_url: str
) -> None:
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 30_000, relationships=0, groups=1)
    env = {**os.environ, "MVS_NATS_URL": nats_url, "MVS_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "mvs.cli", "replay", str(db), "--json", "--batch", "500"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if asyncio.run(_count_msgs(nats_url)) >= 5000 or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = asyncio.run(_count_msgs(nats_url))
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)["sources"][0]
    ids = asyncio.run(_stream_ids(nats_url))
    total = asyncio.run(_count_msgs(nats_url))
    assert 0 < partial < total
    # Every memory row once (30_000 rows incl. 30 rejections, + 1 group + 3 members), plus
    # the ReplayCompleted event, and no event id twice.
    assert total == 30_000 + 1 + 3 + 1
    assert len(ids) == len(set(ids)) == total
    assert summary["status"] in ("resumed", "done")


def test_sigkill_mid_verified_replay_leaves_no_process_and_rerun_verifies(
    tmp_path: Path, nats_url: str
) -> None:
    """The verifier runs beside the replay in child processes: killed with the replay, they
    leave by themselves (their pipe closes), and the re-run completes and verifies clean."""
    import psutil

    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 30_000, relationships=0, groups=1)
    env = {**os.environ, "MVS_NATS_URL": nats_url, "MVS_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "mvs.cli", "replay", str(db), "--verify", "--json",
           "--batch", "500"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:
        children = psutil.Process(proc.pid).children(recursive=True)
        if children and asyncio.run(_count_msgs(nats_url)) >= 5000:
            break
        time.sleep(0.05)
    assert children, "the verified replay started no child process"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, f"left running after the replay was killed: {alive}"
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["verification"]["ok"] is True
    assert data["verification"]["against"] == "projections"


def test_every_sample_file_replays_with_expected_counts(
    legacy_samples: Path, nats_url: str
) -> None:
    results = {Path(r.path).name: r for r in _run(nats_url, [legacy_samples])}
    assert results["translation_cache.json"].events_written == 373
    assert results["service_registry.json"].records_read == 60
    assert results["service_registry.json"].events_written == 120
    assert results["contextual_memory_store.json"].entities == {"sessions": 2, "memories": 21}
    sweeps = [r for n, r in results.items() if n.startswith("pc2_healthcheck")]
    assert len(sweeps) == 3 and all(r.records_read == 31 for r in sweeps)
    assert all(r.rejected == 0 for r in results.values())
    report = _verify_log(nats_url, [legacy_samples])
    assert report.ok, report


def test_observation_report_and_agent_log_replay(tmp_path: Path, nats_url: str) -> None:
    n = write_observation_report(tmp_path / "observation_report.json", 9)
    expected = write_agent_log(tmp_path / "nlu_agent.log")
    results = {Path(r.path).name: r for r in _run(nats_url, [tmp_path])}
    assert results["observation_report.json"].events_written == n + 4
    log = results["nlu_agent.log"]
    assert log.rejected == expected["rejected"]
    assert log.events_written == expected["records"] + expected["rejected"]


def test_since_until_keep_only_records_inside_the_window(tmp_path: Path, nats_url: str) -> None:
    db = tmp_path / "performance_metrics_mainpc.db"
    generate_metrics_db(db, 100)
    all_results = _run(nats_url, [db], dry_run=True)[0]
    windowed = _run(nats_url, [db], since=1_748_000_000.0, until=1_748_043_200.0)[0]
    assert 0 < windowed.records_read < all_results.records_read
    assert windowed.outside_window == all_results.records_read - windowed.records_read


def test_verify_names_the_memory_and_field_that_differ(tmp_path: Path, nats_url: str) -> None:
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 200, relationships=0, groups=1)
    _run(nats_url, [db])

    async def overwrite() -> str:
        con = duckdb.connect(":memory:")
        load_expected(con, [db], ReplayOptions())
        (mid,) = con.execute("SELECT memory_id FROM exp_memories LIMIT 1").fetchone() or ("",)
        nc = await connect(nats_url)
        ev = MemoryWritten(memory_id=mid, content="changed after the migration")
        await nc.jetstream().publish(subject_of(ev), encode_event(ev))
        await nc.close()
        return str(mid)

    mid = asyncio.run(overwrite())
    report = _verify_log(nats_url, [db])
    assert not report.ok
    mem = next(e for e in report.entities if e.entity == "memories")
    assert mem.mismatched == 1
    assert mem.mismatches[0]["key"] == mid
    assert "content" in mem.mismatches[0]["fields"]
    assert not mem.checksums["content"]["ok"] and mem.checksums["tier"]["ok"]


def test_cli_verify_exits_zero_on_clean_samples(
    legacy_samples: Path, nats_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "MVS_NATS_URL": nats_url, "MVS_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-m", "mvs.cli", "replay", str(legacy_samples), "--verify", "--json"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["verification"]["ok"] is True
    # the projections folded in a child process while the replay published
    assert data["verification"]["against"] == "projections"
    assert any("while the replay published" in n for n in data["verification"]["notes"])
    names = {e["entity"] for e in data["verification"]["entities"]}
    assert {"translations", "services", "legacy_health", "sessions", "memories"} <= names


@pytest.mark.parametrize("bad", ["not-a-time"])
def test_bad_since_is_a_clear_error(bad: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mvs.cli", "replay", str(tmp_path), "--dry-run", "--since", bad],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "MVS_HOME": str(tmp_path / "home")},
    )
    assert out.returncode == 1
    assert "--since" in out.stderr and bad in out.stderr


def test_run_verification_reports_which_side_it_compared(
    legacy_samples: Path, nats_url: str, tmp_path: Path
) -> None:
    src = legacy_samples / "translation_cache.json"
    _run(nats_url, [src])

    async def go() -> VerifyReport:
        nc = await connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(EVENTS_STREAM)
            return await run_verification(
                nc, tmp_path / "mvs.duckdb", [src], ReplayOptions(), int(info.state.last_seq),
                timeout=60,
            )
        finally:
            await nc.close()

    report = asyncio.run(go())
    assert report.ok, report
    assert report.against in ("projections", "the event log")
    assert report.entities[0].expected == 373


def test_publisher_names_the_refusal_when_no_stream_takes_the_subject(nats_url: str) -> None:
    from replay.publisher import PipelinedPublisher

    async def go() -> str:
        nc = await connect(nats_url)
        pub = PipelinedPublisher(nc, ack_timeout=10)
        await pub.start()
        batch = pub.new_batch()
        await pub.publish(batch, "not.a.stream.subject", b"x", "id-1")
        try:
            await pub.wait(batch)
        except Exception as exc:  # the BusError under test
            return str(exc)
        finally:
            await pub.close()
            await nc.close()
        return ""

    assert "no stream answers" in asyncio.run(go())


def test_strict_stops_at_the_first_rejected_record_and_names_it(tmp_path: Path) -> None:
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 50, relationships=0, groups=1)
    out = subprocess.run(
        [sys.executable, "-m", "mvs.cli", "replay", str(db), "--dry-run", "--strict"],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "MVS_HOME": str(tmp_path / "home")},
    )
    assert out.returncode == 1
    assert "unified_memory.db:memories:rowid=10" in out.stderr
    assert "content: NULL" in out.stderr


def test_verified_replay_falls_back_to_the_log_when_the_projections_file_is_locked(
    legacy_samples: Path, nats_url: str, tmp_path: Path
) -> None:
    """Another process holds mvs.duckdb without advertising itself: the verifier cannot open
    it, says why, and the replay is still verified, against the event log."""
    from replay.verify_run import replay_and_verify

    src = legacy_samples / "translation_cache.json"
    db_path = tmp_path / "mvs.duckdb"
    locker = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True);"
         " time.sleep(120)", str(db_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "ok"

        async def go() -> tuple[list[SourceResult], VerifyReport]:
            nc = await connect(nats_url)
            try:
                return await replay_and_verify(nc, nats_url, db_path, [src], ReplayOptions())
            finally:
                await nc.close()

        (result,), report = asyncio.run(go())
    finally:
        locker.kill()
        locker.wait()
    assert result.events_written == 373
    assert report.ok, report
    assert report.against == "the event log"
    early = next(n for n in report.notes if n.startswith("early verification failed"))
    assert str(db_path) in early, report.notes  # the child's own reason, naming the file


def test_legacy_side_read_in_a_child_process_equals_the_in_process_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large sources are read for verification in a child process into a scratch file: the
    expected tables, entities and findings are the same as reading them here."""
    from replay import verify_run

    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 2_000, relationships=40, groups=2)
    tables: list[dict[str, list[Any]]] = []
    outcomes = []
    for threshold in (10**12, 0):  # in this process, then in a child
        monkeypatch.setattr(verify_run, "LOAD_ELSEWHERE_BYTES", threshold)
        con = duckdb.connect(":memory:")
        entities, findings = verify_run.load_expected_beside(con, [db], ReplayOptions())
        outcomes.append((sorted(entities), dict(findings)))
        tables.append({
            e: sorted(con.execute(f"SELECT * FROM exp_{e}").fetchall(), key=repr)
            for e in entities
        })
        con.close()
    assert outcomes[0] == outcomes[1]
    assert tables[0] == tables[1]
    assert tables[0]["memories"]


def test_reading_the_log_back_takes_a_pause_for_a_pause_not_for_the_end(
    nats_server: NatsServer,
) -> None:
    """The verify fold and the resume's id scan read up to the log's last sequence: a server
    that stops for 3 s mid-read (SIGSTOP, as a loaded machine can pause it) delays the read
    and does not cut it short (reading until a second or two of silence did)."""
    n_events = 30_000

    async def publish(js: JetStreamContext) -> None:
        await apply_streams(js)
        acks = []
        for i in range(n_events):
            e = MemoryWritten(memory_id=f"m{i}", content=f"c{i}", event_id=f"e{i}")
            acks.append(await js.publish_async(subject_of(e), encode_event(e),
                                               headers={"Nats-Msg-Id": e.event_id}))
        await asyncio.gather(*acks)

    def pause_server() -> threading.Timer:
        pid = nats_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        resume = threading.Timer(3.0, os.kill, (pid, signal.SIGCONT))
        resume.start()
        return resume

    async def go() -> tuple[int, int]:
        nc = await connect(nats_server.url)
        js = nc.jetstream(timeout=30.0)
        await publish(js)
        con = duckdb.connect(":memory:")
        try:
            loop = asyncio.get_running_loop()
            # the pause lands while the first messages are being folded
            loop.call_later(0.05, pause_server)
            n = await fold_event_log(js, con, {"memories": SPEC_BY_ENTITY["memories"]})
            loop.call_later(0.01, pause_server)  # headers only: a quicker read
            ids = await ids_after(js, 0)
            return n, len(ids)
        finally:
            con.close()
            await nc.close()

    assert asyncio.run(go()) == (n_events, n_events)
