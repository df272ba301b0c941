"""Generator of legacy SQLite databases (FORMATS.md L1-L3), ugly cases included.

No real copy of the legacy databases exists, so tests and benchmarks build them from the
documented schemas. ``ugly=True`` mixes in what the legacy system really left behind: parent
ids that dangle, metadata that is not JSON, NULL times, timestamps out of order, numbers
stored as text, and a few rows no reader can map (NULL content, a non-numeric importance).
Every generator returns what it wrote, so a test knows the expected counts.
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GenStats",
    "generate_learning_dbs",
    "generate_memory_db",
    "generate_metrics_db",
    "write_agent_log",
    "write_observation_report",
]

MEMORY_SCHEMA = """
CREATE TABLE memories (
  memory_id TEXT PRIMARY KEY, content TEXT, memory_type TEXT NOT NULL,
  memory_tier TEXT NOT NULL, importance REAL, access_count INTEGER,
  last_accessed_at REAL, created_at REAL, expires_at REAL,
  metadata TEXT, tags TEXT, relationships TEXT, parent_id TEXT);
CREATE TABLE memory_relationships (
  id INTEGER PRIMARY KEY, source_memory_id TEXT, target_memory_id TEXT,
  relationship_type TEXT, strength REAL DEFAULT 1.0, created_at REAL, updated_at REAL);
CREATE TABLE context_groups (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, description TEXT, created_at REAL, updated_at REAL);
CREATE TABLE memory_group_mappings (
  id INTEGER PRIMARY KEY, memory_id TEXT, group_id INTEGER, created_at REAL);
"""

TYPES = ("general", "interaction", "episode", "knowledge_fact", "preference")
TIERS = ("short", "medium", "long")
T0 = 1_748_000_000.0


@dataclass
class GenStats:
    """What a generator wrote: rows per table, and the ugly cases by kind."""

    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    ugly: dict[str, int] = field(default_factory=dict)

    def bump(self, what: dict[str, int], key: str, n: int = 1) -> None:
        what[key] = what.get(key, 0) + n

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())


def _memory_rows(n: int, rng: random.Random, ugly: bool, st: GenStats) -> Iterator[tuple]:
    ids: list[str] = []
    for i in range(n):
        mid = f"mem-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        mtype = TYPES[i % len(TYPES)]
        created: float | str | None = T0 + i * 1.5
        importance: float | str | None = round(rng.random(), 4)
        access: int | str | None = rng.randint(0, 50)
        metadata: str | None = json.dumps({"topic": f"topic-{i % 97}", "n": i})
        tags: str | None = json.dumps([f"t{i % 7}", f"t{i % 11}"])
        parent = ids[rng.randrange(len(ids))] if ids and i % 10 == 0 else None
        content: str | None = f"legacy memory {i}: " + "x" * (i % 40)
        rels = None
        if ugly:
            k = i % 100
            if k == 1:
                metadata = "{not json, " + str(i)
                st.bump(st.ugly, "invalid_json_metadata")
            elif k == 2:
                created = None
                st.bump(st.ugly, "null_created_at")
            elif k == 3:
                parent = f"mem-missing-{i}"
                st.bump(st.ugly, "dangling_parent_id")
            elif k == 4:
                created = T0 - i  # earlier than rows written before it
                st.bump(st.ugly, "out_of_order_created_at")
            elif k == 5:
                importance, access = str(importance), str(access)  # numbers stored as text
                st.bump(st.ugly, "numbers_as_text")
            elif k == 6:
                tags = "[broken"
                st.bump(st.ugly, "invalid_json_tags")
            elif k == 7:
                rels = json.dumps([{"target": ids[-1] if ids else "mem-x", "type": "related"}])
            elif k == 8:
                metadata = None
                tags = None
            elif k == 9 and i % 1000 == 9:
                content = None  # NOT NULL violated by the legacy writer: rejected
                st.bump(st.rejected, "memories")
            elif k == 10 and i % 1000 == 10:
                importance = "high"  # not a number: rejected
                st.bump(st.rejected, "memories")
            elif k == 11:
                created = f"{T0 + i * 1.5}"  # epoch as text
        ids.append(mid)
        if len(ids) > 1000:
            ids = ids[-500:]
        yield (
            mid, content, mtype, TIERS[i % 3], importance, access, created, created, None,
            metadata, tags, rels, parent,
        )


def generate_memory_db(
    path: Path, n: int, *, seed: int = 7, ugly: bool = True, relationships: int | None = None,
    groups: int | None = None,
) -> GenStats:
    """Write an L1 ``unified_memory.db`` with ``n`` memories (and some relationships/groups)."""
    rng = random.Random(seed)
    st = GenStats()
    conn = sqlite3.connect(path)
    conn.executescript(MEMORY_SCHEMA)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    cols = (
        "memory_id, content, memory_type, memory_tier, importance, access_count, "
        "last_accessed_at, created_at, expires_at, metadata, tags, relationships, parent_id"
    )
    # The legacy schema says NOT NULL for content; the legacy writer did not always obey.
    conn.executemany(
        f"INSERT INTO memories ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        _memory_rows(n, rng, ugly, st),
    )
    st.rows["memories"] = n
    ids = [r[0] for r in conn.execute("SELECT memory_id FROM memories LIMIT 2000")]
    n_rel = relationships if relationships is not None else min(n // 10, 10_000)
    rel_rows = []
    for j in range(n_rel):
        a, b = ids[j % len(ids)], ids[(j * 7 + 1) % len(ids)]
        rel_rows.append((j + 1, a, b, ("related", "follows", "refines")[j % 3],
                         round(0.5 + (j % 5) / 10, 2), T0 + j, T0 + j + 1))
    conn.executemany("INSERT INTO memory_relationships VALUES (?,?,?,?,?,?,?)", rel_rows)
    st.rows["memory_relationships"] = n_rel
    n_groups = groups if groups is not None else min(max(n // 1000, 2), 50)
    conn.executemany(
        "INSERT INTO context_groups VALUES (?,?,?,?,?)",
        [(g + 1, f"group-{g}", f"legacy group {g}", T0 + g, None) for g in range(n_groups)],
    )
    st.rows["context_groups"] = n_groups
    maps = [(k + 1, ids[k % len(ids)], (k % n_groups) + 1, T0 + k) for k in range(n_groups * 3)]
    conn.executemany("INSERT INTO memory_group_mappings VALUES (?,?,?,?)", maps)
    st.rows["memory_group_mappings"] = len(maps)
    conn.commit()
    conn.close()
    return st


def generate_learning_dbs(folder: Path, n: int = 50, *, seed: int = 3) -> GenStats:
    """The four L2 databases in ``folder``, ``n`` rows per main table, some ugly rows."""
    rng = random.Random(seed)
    st = GenStats()
    folder.mkdir(parents=True, exist_ok=True)

    def db(name: str, script: str) -> sqlite3.Connection:
        conn = sqlite3.connect(folder / name)
        conn.executescript(script)
        return conn

    c = db("learning_opportunities.db", """CREATE TABLE learning_opportunities (
        id TEXT PRIMARY KEY, source_agent TEXT, opportunity_type TEXT, priority_score REAL,
        status TEXT, created_at REAL, interaction_data TEXT);""")
    rows = []
    for i in range(n):
        data = json.dumps({"turns": i}) if i % 9 else "{bad json"
        created: float | None = T0 + rng.random() * 1000 if i % 13 else None
        rows.append((f"opp-{i}", "LearningManager", ("correction", "praise")[i % 2],
                     rng.random(), "pending", created, data))
    c.executemany("INSERT INTO learning_opportunities VALUES (?,?,?,?,?,?,?)", rows)
    st.rows["learning_opportunities"] = n
    c.commit()
    c.close()

    c = db("training_cycles.db", """CREATE TABLE training_cycles (
        id TEXT PRIMARY KEY, model_name TEXT, learning_opportunities TEXT, status TEXT,
        start_time REAL, end_time REAL, resource_allocation TEXT, hyperparameters TEXT,
        training_logs TEXT);
        CREATE TABLE resource_allocation (id INTEGER PRIMARY KEY, cycle_id TEXT,
        resource_type TEXT, amount REAL, timestamp REAL);""")
    cycles = max(n // 5, 1)
    c.executemany(
        "INSERT INTO training_cycles VALUES (?,?,?,?,?,?,?,?,?)",
        [(f"cyc-{k}", "phi-2", json.dumps([f"opp-{k}", f"opp-{k + 1}"]), "done", T0 + k,
          T0 + k + 60, json.dumps({"gpu": 0.5}), json.dumps({"lr": 1e-4}), "ok")
         for k in range(cycles)],
    )
    c.executemany(
        "INSERT INTO resource_allocation VALUES (?,?,?,?,?)",
        [(k + 1, f"cyc-{k % cycles}", "gpu_memory", 1024.0 + k, T0 + k) for k in range(cycles * 2)],
    )
    st.rows["training_cycles"] = cycles
    st.rows["resource_allocation"] = cycles * 2
    c.commit()
    c.close()

    c = db("learning_adjuster.db", """CREATE TABLE parameter_history (id INTEGER PRIMARY KEY,
        parameter_name TEXT, value REAL, timestamp REAL, performance_metric REAL, metadata TEXT);
        CREATE TABLE parameter_configs (name TEXT PRIMARY KEY, type TEXT, min_value REAL,
        max_value REAL, current_value REAL, step_size REAL, description TEXT, metadata TEXT);
        CREATE TABLE performance_metrics (id INTEGER PRIMARY KEY, metric_name TEXT, value REAL,
        timestamp REAL, parameters TEXT, metadata TEXT);""")
    hist = [(k + 1, f"p{k % 4}", k / 10, T0 + (n - k), rng.random(), None) for k in range(n)]
    hist[3] = (4, "p3", "not-a-number", T0, None, None)  # rejected
    st.bump(st.rejected, "parameter_history")
    c.executemany("INSERT INTO parameter_history VALUES (?,?,?,?,?,?)", hist)
    c.executemany(
        "INSERT INTO parameter_configs VALUES (?,?,?,?,?,?,?,?)",
        [(f"p{k}", "float", 0.0, 1.0, 0.5, 0.1, f"param {k}", "{}") for k in range(4)],
    )
    c.executemany(
        "INSERT INTO performance_metrics VALUES (?,?,?,?,?,?)",
        [(k + 1, "accuracy", rng.random(), T0 + k, json.dumps({"p0": 0.1}), None)
         for k in range(n)],
    )
    st.rows["parameter_history"] = n
    st.rows["parameter_configs"] = 4
    st.rows["adjuster_metrics"] = n
    c.commit()
    c.close()

    c = db("model_evaluation.db", """CREATE TABLE performance_metrics (metric_id TEXT PRIMARY KEY,
        agent_name TEXT, metric_name TEXT, value REAL, timestamp REAL, context TEXT);
        CREATE TABLE model_evaluation_scores (evaluation_id TEXT PRIMARY KEY, model_name TEXT,
        cycle_id TEXT, trust_score REAL, accuracy REAL, f1_score REAL, avg_latency_ms REAL,
        evaluation_timestamp REAL, comparison_data TEXT);""")
    c.executemany(
        "INSERT INTO performance_metrics VALUES (?,?,?,?,?,?)",
        [(f"m-{k}", "ModelEvaluationFramework", "latency_ms", 10.0 + k, T0 + k,
          json.dumps({"k": k})) for k in range(n)],
    )
    c.executemany(
        "INSERT INTO model_evaluation_scores VALUES (?,?,?,?,?,?,?,?,?)",
        [(f"ev-{k}", "phi-2", f"cyc-{k % cycles}", 0.9, 0.8, 0.7, 120.0, T0 + k, None)
         for k in range(cycles)],
    )
    st.rows["evaluation_metrics"] = n
    st.rows["model_evaluation_scores"] = cycles
    c.commit()
    c.close()
    return st


def generate_metrics_db(path: Path, n: int = 200, *, seed: int = 5) -> GenStats:
    """An L3 ``performance_metrics_<host>.db`` with out-of-order and NULL timestamps."""
    rng = random.Random(seed)
    st = GenStats()
    conn = sqlite3.connect(path)
    conn.executescript("""CREATE TABLE performance_metrics (id INTEGER PRIMARY KEY,
        timestamp REAL, agent_name TEXT, metric_type TEXT, metric_value REAL, metadata TEXT,
        environment TEXT, hub_role TEXT);""")
    rows = []
    for k in range(n):
        ts: float | None = T0 + rng.random() * 86400  # never in order
        value: float | str | None = rng.random() * 100
        if k % 50 == 7:
            ts = None
            st.bump(st.ugly, "null_timestamp")
        if k % 50 == 8:
            value = str(value)
            st.bump(st.ugly, "numbers_as_text")
        if k % 100 == 9:
            value = None  # no value: rejected
            st.bump(st.rejected, "metrics")
        rows.append((k + 1, ts, f"Agent{k % 9}", ("cpu_percent", "latency_ms")[k % 2], value,
                     json.dumps({"k": k}) if k % 11 else "oops{", "production", "central"))
    conn.executemany("INSERT INTO performance_metrics VALUES (?,?,?,?,?,?,?,?)", rows)
    st.rows["metrics"] = n
    conn.commit()
    conn.close()
    return st


def write_observation_report(path: Path, entries: int = 12) -> int:
    """An L8 report; returns the number of log entries (plus 4 sections are replayed)."""
    shapes = [
        {"memory_percent": 41.0, "temperature_c": 66, "utilization_percent": 80,
         "power_watts": 210},
        {"load_average": 1.5, "memory_usage_percent": 70.1, "disk_usage_percent": 55},
        {"file_size_kb": 120, "migration_markers_present": 3, "total_markers_expected": 4},
        {"checkpoint_hour": 6, "success_rate_percent": 97.5, "tests_passed": 39,
         "total_tests": 40},
        {},
    ]
    log = [
        {"timestamp": f"2025-07-20T{h % 24:02d}:00:00", "elapsed_hours": h * 0.5,
         "level": ("INFO", "WARNING", "CRITICAL")[h % 3], "message": f"observation {h}",
         "metrics": shapes[h % len(shapes)]}
        for h in range(entries)
    ]
    report = {
        "observation_summary": {"start_time": "2025-07-20T00:00:00",
                                "end_time": "2025-07-21T00:00:00", "planned_duration": 24,
                                "actual_duration": 23.5},
        "alert_summary": {"critical": 1, "warning": 3, "info": 8},
        "observation_log": log,
        "stability_assessment": {"stable": False},
        "recommendations": {"next": ["migrate"]},
    }
    path.write_text(json.dumps(report, indent=1))
    return entries


def write_agent_log(path: Path) -> dict[str, int]:
    """An L9 log mixing JSON lines, logging lines and a traceback; returns expected counts."""
    lines = [
        "garbage before any record",
        '{"timestamp": "2025-07-20T10:00:00", "level": "INFO", "agent": "NLUAgent", '
        '"message": "started"}',
        "2025-07-20 10:00:01,123 - INFO - listening on 5709",
        "2025-07-20 10:00:02,000 - ERROR - request failed",
        "Traceback (most recent call last):",
        '  File "nlu_agent.py", line 10, in handle',
        "ZeroDivisionError: division by zero",
        '{"timestamp": "2025-07-20T10:00:03", "level": "WARNING", broken json',
        '{"timestamp": "2025-07-20T10:00:04", "level": "DEBUG", "agent": "NLUAgent", '
        '"message": "tick"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    return {"records": 4, "rejected": 2, "traceback_lines": 3}
