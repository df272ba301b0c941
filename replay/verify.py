"""``--verify``: compare the legacy sources with what MVS made of them.

The legacy side is read again (the readers are deterministic) and folded into DuckDB temp
tables ``exp_<entity>`` in Arrow batches, one row per expected projection row (see
:mod:`replay.verify_specs`). The MVS side is either the projections (``act_<entity>`` views
over the projection tables; append-only tables are matched by event id through ``events``),
or, when the projections cannot be read, the event log itself folded the same way. Per
entity the report gives counts, a checksum per field, and the ids that are missing or whose
fields differ. Legacy defects (dangling parent ids, invalid JSON, NULL or out-of-order times,
rejected rows) are findings: reported, never fatal.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa
from nats.js import JetStreamContext

from mvs.errors import DecodeError
from replay.detect import discover
from replay.engine import ReplayOptions, in_window
from replay.tracking import read_log_to_end
from replay.verify_specs import SPECS, Spec
from streams.catalog import decode_event

__all__ = ["EntityReport", "VerifyReport", "load_expected", "render_report", "verify"]

FLUSH = 50_000
SAMPLE = 20


class EntityReport(msgspec.Struct):
    entity: str
    table: str
    expected: int
    found: int
    missing: int
    mismatched: int
    checksums: dict[str, dict[str, Any]]
    missing_keys: list[str]
    mismatches: list[dict[str, Any]]


class VerifyReport(msgspec.Struct):
    against: str
    ok: bool
    entities: list[EntityReport]
    findings: dict[str, int]
    notes: list[str]


def _arrow_column(values: list[Any]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.array(values, type=pa.string())
    if kinds == {bool}:
        return pa.array(values, type=pa.bool_())
    if kinds <= {int}:
        return pa.array(values, type=pa.int64())
    if kinds <= {int, float}:
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


class _Table:
    """Rows of one entity, flushed to a DuckDB temp table in Arrow batches."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, name: str, spec: Spec, *, temp: bool = True
    ) -> None:
        self.con, self.name, self.spec = con, name, spec
        self.kind = "TEMP TABLE" if temp else "TABLE"
        self.cols = (*spec.key_columns, *spec.columns, "_pos")
        self.rows: dict[str, list[Any]] = {c: [] for c in self.cols}
        self.created = False
        self.n = 0

    def add(self, row: dict[str, Any], pos: int) -> None:
        for c in self.cols[:-1]:
            self.rows[c].append(row.get(c))
        self.rows["_pos"].append(pos)
        self.n += 1
        if len(self.rows["_pos"]) >= FLUSH:
            self.flush()

    def flush(self) -> None:
        if self.created and not self.rows["_pos"]:
            return
        batch = pa.table({c: _arrow_column(v) for c, v in self.rows.items()})
        self.con.register("_verify_batch", batch)
        if self.created:
            self.con.execute(f"INSERT INTO {self.name} SELECT * FROM _verify_batch")
        else:
            self.con.execute(
                f"CREATE OR REPLACE {self.kind} {self.name} AS SELECT * FROM _verify_batch"
            )
            self.created = True
        self.con.unregister("_verify_batch")
        self.rows = {c: [] for c in self.cols}


def load_expected(
    con: duckdb.DuckDBPyConnection, sources: list[Path], opts: ReplayOptions,
    *, temp: bool = True,
) -> tuple[dict[str, Spec], Counter[str]]:
    """Fold the legacy sources into ``exp_<entity>`` tables (temporary unless ``temp`` is
    false); the entities and findings."""
    tables: dict[str, _Table] = {}
    findings: Counter[str] = Counter()
    pos = 0
    for src in discover(sources, opts.fmt):
        if src.reader is None or not getattr(src.reader, "replayable", True):
            continue
        for rec in src.reader.read(src.path):
            if not in_window(rec, opts):
                continue
            for f in rec.findings:
                findings[f] += 1
            if rec.rejected:
                findings["rejected_record"] += 1
            for ev in rec.events:
                spec = SPECS.get(type(ev))
                if spec is None:
                    continue
                t = tables.get(spec.entity)
                if t is None:
                    t = tables[spec.entity] = _Table(
                        con, f"exp_{spec.entity}", spec, temp=temp
                    )
                row = spec.row(ev)
                row["event_id"] = ev.event_id
                pos += 1
                t.add(row, pos)
    for t in tables.values():
        t.flush()
    return {e: t.spec for e, t in tables.items()}, findings


def _sql_findings(con: duckdb.DuckDBPyConnection, entities: dict[str, Spec]) -> dict[str, int]:
    out: dict[str, int] = {}
    if "memories" in entities:
        sessions = "SELECT session_id FROM exp_sessions" if "sessions" in entities else (
            "SELECT NULL::VARCHAR WHERE false")
        (out["dangling_parent_id"],) = con.execute(
            "SELECT count(*) FROM exp_memories WHERE parent_id IS NOT NULL "
            "AND parent_id NOT IN (SELECT memory_id FROM exp_memories) "
            f"AND parent_id NOT IN ({sessions})"
        ).fetchone() or (0,)
        (out["created_at_out_of_order"],) = con.execute(
            "SELECT count(*) FROM (SELECT created_at < max(created_at) OVER (ORDER BY _pos "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS back FROM exp_memories) "
            "WHERE back"
        ).fetchone() or (0,)
    return {k: int(v) for k, v in out.items() if v}


def projection_views(con: duckdb.DuckDBPyConnection, entities: dict[str, Spec]) -> None:
    """``act_<entity>`` views over the projection tables (append tables keyed by event id)."""
    for entity, spec in entities.items():
        cols = ", ".join(f"t.{c}" for c in spec.columns)
        sep = ", " if cols else ""
        if spec.key is None:
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW act_{entity} AS SELECT e.event_id{sep}{cols} "
                f"FROM {spec.table} t JOIN events e ON e.seq = t.seq"
            )
        else:
            keys = ", ".join(f"t.{k}" for k in spec.key)
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW act_{entity} AS SELECT {keys}{sep}{cols} "
                f"FROM {spec.table} t"
            )


async def fold_event_log(
    js: JetStreamContext, con: duckdb.DuckDBPyConnection, entities: dict[str, Spec],
    *, stall: float = 30.0,
) -> int:
    """Read the whole event log back and fold it into ``act_<entity>`` tables; events read.

    Read with :func:`replay.tracking.read_log_to_end`: to the log's last sequence, never to a
    pause (this runs niced beside a replay); a stall of ``stall`` seconds is an error.
    """
    wanted = {t: s for t, s in SPECS.items() if s.entity in entities}
    tables = {s.entity: _Table(con, f"act_{s.entity}", s) for s in wanted.values()}
    n = 0
    async with contextlib.aclosing(read_log_to_end(js, stall=stall)) as log:
        async for msg in log:
            n += 1
            try:
                ev = decode_event(msg.data)
            except DecodeError:
                ev = None
            spec = wanted.get(type(ev)) if ev is not None else None
            if ev is not None and spec is not None:
                row = spec.row(ev)
                row["event_id"] = ev.event_id
                tables[spec.entity].add(row, msg.metadata.sequence.stream)
    for t in tables.values():
        t.flush()
    for entity, spec in entities.items():
        t = tables[entity]
        key = ", ".join(spec.key_columns)
        # The state is the last write per key, as a projection folds it.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE act_{entity} AS SELECT * EXCLUDE (_pos) FROM "
            f"{t.name} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY _pos DESC) = 1"
        )
    return n


def _compare(con: duckdb.DuckDBPyConnection, entity: str, spec: Spec) -> EntityReport:
    keys = spec.key_columns
    on = " AND ".join(f"e.{k} = a.{k}" for k in keys)
    part = ", ".join(keys)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE cmp_e AS SELECT * FROM exp_{entity} "
        f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY _pos DESC) = 1"
    )
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE act_{entity}").fetchall()}
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE cmp_a AS SELECT a.* FROM act_{entity} a "
        f"SEMI JOIN cmp_e e ON {on} "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join('a.' + k for k in keys)}) = 1"
    )

    def norm(alias: str, col: str) -> str:
        t = types.get(col, "VARCHAR")
        t = "VARCHAR" if t.upper() == "JSON" else t
        return f"CAST(CAST({alias}.{col} AS {t}) AS VARCHAR)"

    (expected,) = con.execute("SELECT count(*) FROM cmp_e").fetchone() or (0,)
    (found,) = con.execute("SELECT count(*) FROM cmp_a").fetchone() or (0,)
    keytext = " || '|' || ".join(f"CAST(e.{k} AS VARCHAR)" for k in keys)
    missing_keys = [r[0] for r in con.execute(
        f"SELECT {keytext} FROM cmp_e e ANTI JOIN cmp_a a ON {on} ORDER BY e._pos LIMIT {SAMPLE}"
    ).fetchall()]
    checksums: dict[str, dict[str, Any]] = {}
    mismatches: list[dict[str, Any]] = []
    mismatched = 0
    if spec.columns:
        sums = ", ".join(f"sum(hash({norm('e', c)}))" for c in spec.columns)
        exp_sums = con.execute(f"SELECT {sums} FROM cmp_e e").fetchone() or ()
        act_sums = con.execute(f"SELECT {sums.replace('e.', 'a.')} FROM cmp_a a").fetchone() or ()
        for c, x, y in zip(spec.columns, exp_sums, act_sums, strict=True):
            checksums[c] = {"expected": str(x or 0), "actual": str(y or 0), "ok": x == y}
        diffs = ", ".join(
            f"CASE WHEN {norm('e', c)} IS DISTINCT FROM {norm('a', c)} THEN '{c}' END"
            for c in spec.columns
        )
        rows = con.execute(
            f"SELECT {keytext}, list_filter([{diffs}], lambda x: x IS NOT NULL) AS d "
            f"FROM cmp_e e JOIN cmp_a a ON {on} WHERE len(list_filter([{diffs}], "
            f"lambda x: x IS NOT NULL)) > 0 ORDER BY e._pos"
        ).fetchall()
        mismatched = len(rows)
        mismatches = [{"key": k, "fields": list(d)} for k, d in rows[:SAMPLE]]
    return EntityReport(
        entity=entity, table=spec.table, expected=int(expected), found=int(found),
        missing=int(expected) - int(found), mismatched=mismatched, checksums=checksums,
        missing_keys=missing_keys, mismatches=mismatches,
    )


def verify(
    con: duckdb.DuckDBPyConnection, entities: dict[str, Spec], findings: Counter[str],
    *, against: str, notes: Iterable[str] = (),
) -> VerifyReport:
    """Compare ``exp_*`` with ``act_*`` (both already in ``con``)."""
    reports = [_compare(con, e, s) for e, s in sorted(entities.items())]
    all_findings = dict(findings)
    all_findings.update(_sql_findings(con, entities))
    ok = all(r.missing == 0 and r.mismatched == 0 for r in reports)
    return VerifyReport(
        against=against, ok=ok, entities=reports, findings=all_findings, notes=list(notes)
    )


def render_report(rep: VerifyReport) -> str:
    lines = [
        f"Verification against {rep.against}: {'OK' if rep.ok else 'MISMATCH'}",
        f"{'ENTITY':<24} {'TABLE':<24} {'EXPECTED':>9} {'FOUND':>9} {'MISSING':>8} "
        f"{'DIFFER':>7}  CHECKSUMS",
    ]
    for r in rep.entities:
        bad = [c for c, v in r.checksums.items() if not v["ok"]]
        cs = "all fields equal" if not bad else "differ: " + ", ".join(bad)
        if not r.checksums:
            cs = "(keys only)"
        lines.append(f"{r.entity:<24} {r.table:<24} {r.expected:>9} {r.found:>9} "
                     f"{r.missing:>8} {r.mismatched:>7}  {cs}")
        for k in r.missing_keys[:5]:
            lines.append(f"    missing: {k}")
        for mm in r.mismatches[:5]:
            lines.append(f"    differs: {mm['key']}: {', '.join(mm['fields'])}")
    if rep.findings:
        lines.append("Legacy findings (kept as they were, not errors):")
        for k, v in sorted(rep.findings.items()):
            lines.append(f"  {k:<32} {v:>8}")
    lines += [f"Note: {n}" for n in rep.notes]
    return "\n".join(lines)

