"""Backups and restores against a real nats-server, real DuckDB files and real config files."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mvs.bus import connect
from mvs.cli import main
from mvs.natsserver import NatsServer
from replay.backup import (
    BackupCorrupted,
    DuckdbBusy,
    RestoreReport,
    create_backup,
    latest_backup,
    list_backups,
    restore_backup,
    verify_backup,
)
from streams.definitions import apply_streams


def _make_home(tmp_path: Path) -> tuple[Path, Path]:
    home, config = tmp_path / "home", tmp_path / "config"
    home.mkdir(parents=True)
    (config / "maps").mkdir(parents=True)
    (config / "mvs_startup_config.yaml").write_text("feature_flags:\n  use_mvs_routing: 0.1\n")
    (config / "maps" / "legacy_agents.yaml").write_text("EmotionEngine: emotion\n")
    con = duckdb.connect(str(home / "mvs.duckdb"))
    con.execute("CREATE TABLE memories(memory_id VARCHAR PRIMARY KEY, content VARCHAR)")
    con.execute("INSERT INTO memories SELECT 'm' || i, 'c' || i FROM range(1000) t(i)")
    con.close()
    return home, config


async def _fill(url: str, n: int) -> None:
    nc = await connect(url)
    js = nc.jetstream()
    await apply_streams(js)
    for i in range(n):
        await js.publish(f"mvs.evt.memory.m{i}", f"payload-{i}".encode(),
                         headers={"Nats-Msg-Id": f"evt-{i}"})
    await nc.close()


async def _messages(url: str, stream: str) -> list[tuple[int, str, str | None, bytes]]:
    nc = await connect(url)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        m = await js.get_msg(stream, seq)
        msg_id = (m.headers or {}).get("Nats-Msg-Id")
        out.append((m.seq or 0, m.subject or "", msg_id, m.data or b""))
    await nc.close()
    return out


async def _backup(url: str, home: Path, config: Path) -> Path:
    nc = await connect(url)
    try:
        return (await create_backup(nc, home=home, config_dir=config)).path
    finally:
        await nc.close()


async def _restore(
    url: str, src: Path, home: Path, config: Path, *, replace_streams: bool = False
) -> RestoreReport:
    nc = await connect(url)
    try:
        return await restore_backup(nc, src, home=home, config_dir=config,
                                    replace_streams=replace_streams)
    finally:
        await nc.close()


def test_backup_then_restore_on_a_new_server_gives_the_same_messages_config_and_rows(
    tmp_path: Path, nats_url: str
) -> None:
    home, config = _make_home(tmp_path)
    asyncio.run(_fill(nats_url, 300))
    before = asyncio.run(_messages(nats_url, "MVS_EVENTS"))
    path = asyncio.run(_backup(nats_url, home, config))

    assert path.parent == home / "backups"
    manifest = verify_backup(path)
    assert manifest.streams["MVS_EVENTS"]["messages"] == 300
    assert {f.kind for f in manifest.files} == {"config", "duckdb", "stream", "stream_meta"}

    # Disaster: config edited, DuckDB lost; a new, empty server.
    (config / "mvs_startup_config.yaml").write_text("broken: [")
    (home / "mvs.duckdb").unlink()
    with NatsServer(store_dir=tmp_path / "nats2", port=0) as fresh:
        asyncio.run(_fill(fresh.url, 0))  # 'mvs up' made the streams, empty, before the restore
        report = asyncio.run(_restore(fresh.url, path, home, config))
        after = asyncio.run(_messages(fresh.url, "MVS_EVENTS"))

    assert after == before  # same sequences, subjects, Msg-Ids and payloads
    assert "restored (300 messages" in report.streams["MVS_EVENTS"]
    assert "use_mvs_routing: 0.1" in (config / "mvs_startup_config.yaml").read_text()
    assert (config / "maps" / "legacy_agents.yaml").read_text() == "EmotionEngine: emotion\n"
    con = duckdb.connect(str(home / "mvs.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM memories").fetchone() == (1000,)
    con.close()
    # The broken config was moved aside, not destroyed.
    aside = report.moved_aside
    assert aside is not None
    assert (aside / "config" / "mvs_startup_config.yaml").read_text() == "broken: ["


def test_a_corrupted_backup_file_is_named_and_nothing_is_restored(
    tmp_path: Path, nats_url: str
) -> None:
    home, config = _make_home(tmp_path)
    asyncio.run(_fill(nats_url, 20))
    path = asyncio.run(_backup(nats_url, home, config))
    snap = path / "streams" / "MVS_EVENTS.tar.s2"
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.write_bytes(bytes(data))
    (path / "config" / "maps" / "legacy_agents.yaml").unlink()
    (config / "mvs_startup_config.yaml").write_text("changed: true\n")

    with pytest.raises(BackupCorrupted) as err:
        asyncio.run(_restore(nats_url, path, home, config))
    assert "streams/MVS_EVENTS.tar.s2 is corrupted" in str(err.value)
    assert "config/maps/legacy_agents.yaml is missing" in str(err.value)
    assert (config / "mvs_startup_config.yaml").read_text() == "changed: true\n"


def test_restore_keeps_an_existing_stream_unless_asked_to_replace_it(
    tmp_path: Path, nats_url: str
) -> None:
    home, config = _make_home(tmp_path)
    asyncio.run(_fill(nats_url, 10))
    path = asyncio.run(_backup(nats_url, home, config))
    asyncio.run(_fill(nats_url, 15))  # ids evt-10..14 are new: the log grows to 15

    report = asyncio.run(_restore(nats_url, path, home, config))
    assert report.streams["MVS_EVENTS"].startswith("kept (exists with 15")
    assert len(asyncio.run(_messages(nats_url, "MVS_EVENTS"))) == 15

    report = asyncio.run(_restore(nats_url, path, home, config, replace_streams=True))
    assert report.streams["MVS_EVENTS"].startswith("restored (10 messages")
    assert len(asyncio.run(_messages(nats_url, "MVS_EVENTS"))) == 10


def test_duckdb_rows_still_in_the_wal_are_in_the_backup(tmp_path: Path) -> None:
    home, config = _make_home(tmp_path)
    con = duckdb.connect(str(home / "mvs.duckdb"))
    con.execute("SET checkpoint_threshold='1GB'")
    con.execute("INSERT INTO memories VALUES ('late', 'written just before the backup')")
    con.close()
    result = asyncio.run(create_backup(None, home=home, config_dir=config,
                                       parts=("config", "duckdb")))
    copy = duckdb.connect(str(result.path / "duckdb" / "mvs.duckdb"), read_only=True)
    assert copy.execute("SELECT count(*) FROM memories").fetchone() == (1001,)
    copy.close()
    assert latest_backup(home) == result.path


def test_mvs_backup_and_restore_commands(
    tmp_path: Path,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home, config = _make_home(tmp_path)
    asyncio.run(_fill(nats_url, 5))
    monkeypatch.setenv("MVS_HOME", str(home))
    monkeypatch.setenv("MVS_NATS_URL", nats_url)
    monkeypatch.setenv("MVS_CONFIG", str(config / "mvs_startup_config.yaml"))

    assert main(["backup"]) == 0
    assert "stream MVS_EVENTS: 5 messages" in capsys.readouterr().out
    [made] = list_backups(home)
    assert main(["backup", "--list"]) == 0
    assert made.name in capsys.readouterr().out

    (made / "duckdb" / "mvs.duckdb").write_bytes(b"not a database")
    assert main(["restore", made.name, "--only", "config"]) == 1
    assert "duckdb/mvs.duckdb is corrupted" in capsys.readouterr().err


def _backup_with_duckdb(tmp_path: Path, home: Path, config: Path) -> Path:
    """A backup with a DuckDB file and an older config, made on another home."""
    other_home, other_config = _make_home(tmp_path / "other")
    made = asyncio.run(create_backup(None, home=other_home, config_dir=other_config,
                                     parts=("config", "duckdb")))
    return made.path


def test_a_duckdb_file_held_by_a_running_process_is_left_out_and_said_so(tmp_path: Path) -> None:
    home, config = _make_home(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
         " time.sleep(120)", str(home / "mvs.duckdb")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = asyncio.run(create_backup(None, home=home, config_dir=config,
                                           parts=("config", "duckdb")))
        [note] = result.manifest.notes
        assert note.startswith("mvs.duckdb left out: cannot open")
        assert not result.manifest.of_kind("duckdb")
        assert not (result.path / "duckdb").exists()
        with pytest.raises(DuckdbBusy, match="stop it with 'mvs down' first"):
            asyncio.run(create_backup(None, home=home, config_dir=config,
                                      parts=("duckdb",), require_duckdb=True))
        # Restoring over a file another process holds is refused before anything changes.
        (config / "mvs_startup_config.yaml").write_text("changed: true\n")
        with_db = _backup_with_duckdb(tmp_path, home, config)
        with pytest.raises(DuckdbBusy, match="another process holds it"):
            asyncio.run(restore_backup(None, with_db, home=home, config_dir=config))
        assert (config / "mvs_startup_config.yaml").read_text() == "changed: true\n"
    finally:
        holder.kill()
        holder.wait()
