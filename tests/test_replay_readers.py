"""Legacy readers: detection, expected counts, tolerance, deterministic ids, resumable order."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from legacy_gen import (
    generate_learning_dbs,
    generate_memory_db,
    generate_metrics_db,
    write_agent_log,
    write_observation_report,
)

from replay.detect import discover
from replay.model import Record
from replay.readers import memory_db, reader_for_format
from replay.readers.health_sweeps import status_is_healthy
from replay.readers.startup_config import resolve_port
from streams.catalog import decode_event, encode_event
from streams.events.legacy import LegacyRecordRejected
from streams.events.memory import MemoryWritten


def _read_all(path: Path) -> list[Record]:
    (src,) = discover([path])
    assert src.reader is not None, f"{path} not detected"
    return list(src.reader.read(path))


def test_every_sample_file_is_detected_with_its_format(legacy_samples: Path) -> None:
    formats = {s.path.name: s.format for s in discover([legacy_samples])}
    assert formats["translation_cache.json"] == "L5"
    assert formats["service_registry.json"] == "L6"
    assert formats["contextual_memory_store.json"] == "L4"
    assert formats["mainpc_startup_config.yaml"] == "L10"
    assert sum(1 for f in formats.values() if f == "L7") == 3


def test_translation_cache_sample_gives_all_373_entries(legacy_samples: Path) -> None:
    records = _read_all(legacy_samples / "translation_cache.json")
    assert len(records) == 373
    assert not any(r.rejected for r in records)
    engines = Counter(r.events[0].engine for r in records)  # type: ignore[attr-defined]
    assert engines == {"google": 372, "nllb": 1}


def test_session_store_sample_gives_sessions_and_their_entries(legacy_samples: Path) -> None:
    records = _read_all(legacy_samples / "contextual_memory_store.json")
    by_entity = Counter(r.entity for r in records)
    assert by_entity == {"sessions": 2, "memories": 21}
    # The real file has entries out of time order: a finding, and the order is kept.
    assert any("entries_out_of_order" in r.findings for r in records)


def test_registry_and_sweeps_samples_count_every_entry(legacy_samples: Path) -> None:
    registry = _read_all(legacy_samples / "service_registry.json")
    assert len(registry) == 60
    assert all(len(r.events) == 2 for r in registry)
    sweeps = [r for p in sorted((legacy_samples / "health_sweeps").iterdir())
              for r in _read_all(p)]
    assert Counter(r.entity for r in sweeps) == {"legacy_health": 90, "legacy_observations": 3}
    healthy = [r for r in sweeps if r.entity == "legacy_health" and r.events[0].healthy]  # type: ignore[attr-defined]
    assert len(healthy) == 1


def test_memory_db_maps_ugly_rows_and_rejects_only_unmappable_ones(tmp_path: Path) -> None:
    db = tmp_path / "unified_memory.db"
    stats = generate_memory_db(db, 1200)
    records = _read_all(db)
    assert len(records) == stats.total_rows
    rejected = [r for r in records if r.rejected]
    assert len(rejected) == stats.total_rejected == 4
    rej = rejected[0].events[0]
    assert isinstance(rej, LegacyRecordRejected)
    assert rej.location.startswith("unified_memory.db:memories:rowid=")
    memories = [r.events[0] for r in records if r.entity == "memories" and not r.rejected]
    assert all(isinstance(m, MemoryWritten) for m in memories)
    raw_meta = [m for m in memories if m.metadata_raw is not None]  # type: ignore[attr-defined]
    assert len(raw_meta) == stats.ugly["invalid_json_metadata"]
    assert raw_meta[0].metadata_raw.startswith("{not json")  # type: ignore[attr-defined]
    assert sum(1 for m in memories if m.created_at is None) == stats.ugly["null_created_at"]  # type: ignore[attr-defined]


def test_event_ids_are_deterministic_and_survive_the_codec(tmp_path: Path) -> None:
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 300)
    first = [e.event_id for r in _read_all(db) for e in r.events]
    second = [e.event_id for r in _read_all(db) for e in r.events]
    assert first == second
    assert len(set(first)) == len(first)
    ev = _read_all(db)[0].events[0]
    assert decode_event(encode_event(ev)) == ev


def test_event_id_derivation_never_changes() -> None:
    """Ids already in users' streams must come out again: a changed derivation would make a
    second replay of the same legacy data publish it all twice (different Msg-Ids)."""
    from replay.model import digest, event_id

    assert event_id("memory-db", "memory", "m1", ("a", 1, None, 2.5, b"x")) == (
        "lg-c50d6e179269e45407ea8a861b73f713"
    )
    assert digest("x", 1, ("\u00e9", None)) == "a28a7b20384c79c4b8ea0b131419596f"


def test_reading_with_skip_resumes_exactly_where_asked(tmp_path: Path) -> None:
    db = tmp_path / "unified_memory.db"
    generate_memory_db(db, 400, relationships=30, groups=3)
    ids = [r.events[0].event_id for r in memory_db.READER.read(db)]
    for skip in (0, 1, 399, 400, 429, 430, len(ids)):
        tail = [r.events[0].event_id for r in memory_db.READER.read(db, skip=skip)]
        assert tail == ids[skip:]


def test_learning_and_metrics_dbs_are_told_apart_by_their_columns(tmp_path: Path) -> None:
    learn = generate_learning_dbs(tmp_path / "learn", 30)
    metrics = generate_metrics_db(tmp_path / "performance_metrics_mainpc.db", 100)
    sources = discover([tmp_path])
    assert {s.format for s in sources} == {"L2", "L3"}
    l2 = [r for s in sources if s.format == "L2" for r in s.reader.read(s.path)]  # type: ignore[union-attr]
    assert len(l2) == learn.total_rows
    assert sum(r.rejected for r in l2) == learn.total_rejected
    l3 = _read_all(tmp_path / "performance_metrics_mainpc.db")
    assert len(l3) == metrics.total_rows
    assert sum(r.rejected for r in l3) == metrics.total_rejected
    assert {r.events[0].host for r in l3 if not r.rejected} == {"mainpc"}  # type: ignore[attr-defined]


def test_observation_report_and_agent_log_fixtures(tmp_path: Path) -> None:
    n = write_observation_report(tmp_path / "observation_report.json", 10)
    obs = _read_all(tmp_path / "observation_report.json")
    assert len(obs) == n + 4
    kinds = Counter(r.events[0].kind for r in obs)  # type: ignore[attr-defined]
    assert kinds["gpu"] == 2 and kinds["checkpoint"] == 2 and kinds["note"] == 2
    expected = write_agent_log(tmp_path / "nlu_agent.log")
    log = _read_all(tmp_path / "nlu_agent.log")
    assert sum(r.rejected for r in log) == expected["rejected"]
    lines = [r.events[0] for r in log if not r.rejected]
    assert len(lines) == expected["records"]
    error = next(e for e in lines if e.level == "ERROR")  # type: ignore[attr-defined]
    assert "ZeroDivisionError" in error.message  # type: ignore[attr-defined]
    assert error.line_no == 4  # type: ignore[attr-defined]


def test_port_strings_resolve_with_the_offset() -> None:
    assert resolve_port("${PORT_OFFSET}+7140") == 7140
    assert resolve_port("${PORT_OFFSET}+7140", port_offset=100) == 7240
    assert resolve_port(26002) == 26002
    with pytest.raises(ValueError, match="MAINPC_OBS_HUB"):
        resolve_port("${MAINPC_OBS_HUB}")


def test_health_status_text_is_read_liberally() -> None:
    assert status_is_healthy("[OK] Healthy")
    assert status_is_healthy("\u2705 healthy")
    assert not status_is_healthy("\u274c Timeout")
    assert not status_is_healthy("[ERROR] Timeout")
    assert not status_is_healthy("unhealthy")


def test_unknown_format_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown legacy format 'L99'"):
        reader_for_format("L99")
