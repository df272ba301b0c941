"""Rollback against a real nats-server, real flags in JetStream KV, real DuckDB projections."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from mvs.bus import connect
from mvs.cli import main
from mvs.errors import ConfigError, ProjectionError
from mvs.flags import FlagStore
from mvs.publisher import EventPublisher
from projections.query import ADVERT_NAME
from projections.registry import PROJECTIONS, projection
from projections.runner import ProjectionRunner
from replay.backup import BackupCorrupted, create_backup
from replay.rollback import projections_as_of, rollback, seq_at_time, subject_matches
from streams.catalog import encode_event, subject_of
from streams.definitions import apply_streams
from streams.events.memory import MemoryWritten

FLAGS = ("use_mvs_routing", "use_unified_memory", "use_consolidated_emotion")


def _memories(path: Path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM memories").fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


async def fold_live(nc: Any, path: Path) -> None:
    """Fold the log into ``path`` the way the projection host does: each projection's durable
    consumer starts after the position stored in the file, and steps until caught up."""
    js = nc.jetstream()
    db = duckdb.connect(str(path))
    try:
        for name in PROJECTIONS:
            runner = ProjectionRunner(projection(name), db, js)
            runner.prepare()
            await runner.subscribe()
            while True:
                try:
                    if not await runner.step(0.5):
                        break
                except TimeoutError:
                    # nats-py's fetch can raise a bare asyncio.TimeoutError on a busy machine
                    # (projections/runner.py only catches nats' own): an empty fetch.
                    break
            await runner.close()
            runner.con.close()
    finally:
        db.close()


def _positions(path: Path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute("SELECT projection, last_seq FROM projection_positions")
                    .fetchall())
    finally:
        con.close()


class Setup:
    """A small installation: flags at 50 %, 20 memories, a backup, then 30 'bad' memories."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.url = url
        self.home = tmp_path / "home"
        self.config = tmp_path / "config"
        self.home.mkdir()
        self.config.mkdir()
        self.duckdb = self.home / "mvs.duckdb"
        self.cfg_file = self.config / "mvs_startup_config.yaml"
        self.backup_seq = 0
        self.mid_time = 0.0
        self.mid_seq = 0

    async def build(self) -> None:
        nc = await connect(self.url)
        js = nc.jetstream()
        await apply_streams(js)
        pub = EventPublisher(js)
        store = await FlagStore.open(js, events=pub, defaults=dict.fromkeys(FLAGS, 0.1),
                                     watch=False)
        for name in FLAGS:
            await store.set(name, 0.5, actor="operator")
        await store.stop()
        self.cfg_file.write_text("version: good\n")
        for i in range(20):
            ack = await pub.publish(MemoryWritten(memory_id=f"m{i}", content=f"good {i}",
                                                  event_id=f"good-{i}"))
            if i == 9:
                time.sleep(0.01)  # a gap in the log's clock between the 10th and 11th
                self.mid_seq, self.mid_time = ack.seq, time.time()
                time.sleep(0.01)
        made = await create_backup(nc, home=self.home, config_dir=self.config)
        self.backup_seq = made.manifest.streams["MVS_EVENTS"]["last_seq"]
        self.cfg_file.write_text("version: bad\n")
        for i in range(30):
            await pub.publish(MemoryWritten(memory_id=f"bad{i}", content="bad",
                                            event_id=f"bad-{i}"))
        await pub.close()
        await fold_live(nc, self.duckdb)
        await nc.close()

    async def rollback(self, **kw: Any) -> Any:
        nc = await connect(self.url)
        try:
            return await rollback(nc, home=self.home, config_dir=self.config,
                                  duckdb_path=self.duckdb, flag_names=FLAGS, **kw)
        finally:
            await nc.close()

    async def flags(self) -> dict[str, float]:
        nc = await connect(self.url)
        store = await FlagStore.open(nc.jetstream(), watch=False)
        try:
            return {n: store.fraction(n) for n in FLAGS}
        finally:
            await store.stop()
            await nc.close()


@pytest.fixture
def setup(tmp_path: Path, nats_url: str) -> Setup:
    s = Setup(tmp_path, nats_url)
    asyncio.run(s.build())
    assert _memories(s.duckdb) == 50
    return s


def test_subject_matching_follows_nats_wildcards() -> None:
    assert subject_matches("mvs.evt.>", "mvs.evt.memory.m1")
    assert subject_matches("mvs.evt.*.m1", "mvs.evt.memory.m1")
    assert not subject_matches("mvs.evt.memory.>", "mvs.evt.memory")
    assert not subject_matches("mvs.evt.flag.*", "mvs.evt.memory.m1")


def test_rollback_to_the_backup_point_keeps_every_event(setup: Setup) -> None:
    report = asyncio.run(setup.rollback())

    assert report.to_seq == setup.backup_seq
    assert report.flags == dict.fromkeys(FLAGS, (0.5, 0.0))
    assert asyncio.run(setup.flags()) == dict.fromkeys(FLAGS, 0.0)
    assert setup.cfg_file.read_text() == "version: good\n"
    assert _memories(setup.duckdb) == 20
    assert report.events_kept and report.events_after >= report.events_before
    assert report.old_duckdb is not None and _memories(report.old_duckdb) == 50
    assert set(_positions(setup.duckdb).values()) == {setup.backup_seq}


def test_rollback_to_a_time_and_skipping_later_events_when_projections_resume(
    setup: Setup,
) -> None:
    seq = asyncio.run(_seq_at(setup.url, setup.mid_time))
    assert seq == setup.mid_seq
    report = asyncio.run(setup.rollback(to_time=setup.mid_time, skip_later=True))
    assert report.to_seq == setup.mid_seq
    assert _memories(setup.duckdb) == 10

    # Projections resume after their stored position (the runner's contract): at the log's
    # last sequence, so the events after the rollback point stay out of the read model.
    assert set(_positions(setup.duckdb).values()) == {report.log_last_seq}


async def _seq_at(url: str, at: float) -> int:
    nc = await connect(url)
    try:
        return await seq_at_time(nc, at)
    finally:
        await nc.close()


def test_a_corrupted_backup_or_a_bad_point_changes_nothing(setup: Setup) -> None:
    with pytest.raises(ConfigError, match="outside the log"):
        asyncio.run(setup.rollback(to_seq=10**6))
    [backup] = (setup.home / "backups").iterdir()
    (backup / "config" / "mvs_startup_config.yaml").write_text("version: tampered\n")
    with pytest.raises(BackupCorrupted, match=r"config/mvs_startup_config\.yaml is corrupted"):
        asyncio.run(setup.rollback(to_seq=5))
    assert asyncio.run(setup.flags()) == dict.fromkeys(FLAGS, 0.5)
    assert setup.cfg_file.read_text() == "version: bad\n"
    assert _memories(setup.duckdb) == 50


def test_mvs_rollback_command(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MVS_HOME", str(setup.home))
    monkeypatch.setenv("MVS_NATS_URL", setup.url)
    monkeypatch.setenv("MVS_CONFIG", str(setup.cfg_file))
    assert main(["rollback", "--to-seq", str(setup.mid_seq), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["to_seq"] == setup.mid_seq and out["events_kept"] is True
    assert out["flags"]["use_unified_memory"] == {"was": 0.5, "now": 0.0}
    assert _memories(setup.duckdb) == 10


def test_folding_as_of_a_point_loses_no_event_however_small_the_batches(
    tmp_path: Path, nats_url: str
) -> None:
    async def go() -> dict[str, int]:
        nc = await connect(nats_url)
        js = nc.jetstream()
        await apply_streams(js)
        acks = []
        for i in range(3000):
            e = MemoryWritten(memory_id=f"m{i}", content=f"c{i}", event_id=f"e{i}")
            acks.append(await js.publish_async(subject_of(e), encode_event(e),
                                               headers={"Nats-Msg-Id": e.event_id}))
        await asyncio.gather(*acks)
        try:
            return await projections_as_of(js, tmp_path / "asof.duckdb", 2500, batch=50)
        finally:
            await nc.close()

    folded = asyncio.run(go())
    assert folded["history"] == folded["memory"] == 2500
    assert _memories(tmp_path / "asof.duckdb") == 2500


def test_with_a_projection_host_running_only_flags_and_config_can_roll_back(
    setup: Setup,
) -> None:
    # The host advertises itself beside the DuckDB file (projections.query.running_host).
    advert = setup.home / ADVERT_NAME
    advert.write_text(json.dumps({"pid": os.getpid(), "url": setup.url}))
    with pytest.raises(ProjectionError, match="nothing was changed"):
        asyncio.run(setup.rollback())
    assert asyncio.run(setup.flags()) == dict.fromkeys(FLAGS, 0.5)

    report = asyncio.run(setup.rollback(projections=False))
    assert asyncio.run(setup.flags()) == dict.fromkeys(FLAGS, 0.0)
    assert setup.cfg_file.read_text() == "version: good\n"
    assert report.to_seq is None and _memories(setup.duckdb) == 50
