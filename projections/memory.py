"""The ``memory`` projection: memories, relationships, context groups, sessions, embeddings.

Semantics (the reference the tests check against):

* ``MemoryWritten`` creates or wholly replaces a memory (a deleted one comes back).
* ``MemoryUpdated`` sets the fields it carries; a new ``metadata`` clears ``metadata_raw``.
* ``MemoryAccessed`` adds one to ``access_count`` and sets ``last_accessed_at``;
  ``MemoryReinforced`` / ``MemoryDecayed`` set importance and tier; ``MemoryDeleted`` marks
  the row ``deleted`` (kept for history). Any of these, and ``MemoryEmbedded``, on a memory
  that does not exist or is deleted is refused (dead letter).
* Relationships are keyed by (source, target, type): added replaces, removed deletes.
* Group membership is kept once per (group, memory) with its first time.
* ``sessions.memory_count`` is the number of live memories carrying the session id.

The event-by-event definitions are in :mod:`projections.memory_rows`. This module folds a
batch set-based where that has the same effect: the last writes of memories that are only
written (then perhaps patched) in the batch as rows, the patches of memories nothing else
touches as one ``UPDATE``, the rest event by event. The split is stateless
(:meth:`MemoryProjection.prepare`), so the intake process makes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from projections.base import (
    FoldContext,
    Item,
    ItemsAt,
    Key,
    Projection,
    insert_arrow,
    items_by_seq,
)
from projections.memory_rows import (
    HANDLERS,
    ON_MEMORIES,
    not_live,
    set_updated,
    written_columns,
)
from streams.events import memory as m

__all__ = ["MemoryProjection"]


def _split_writes(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(the last ``MemoryWritten`` of each memory whose events in the batch are writes, then
    only patches (see _PATCHES), if any; the rest, without the earlier writes of those).

    Such a memory's row after its last write is that write, whatever it was before, so
    those writes need no event-by-event fold; its patches, left in the rest, are then
    patches of a live memory nothing else of the rest touches (see _split_patches).
    """
    # per memory: writes only so far, writes then patches, or anything else
    writing, patching, other = 0, 1, 2
    state: dict[str, int] = {}
    for i in items:
        kind = type(i.event)
        if kind not in ON_MEMORIES:
            continue
        memory = i.event.memory_id  # type: ignore[attr-defined]
        now = state.get(memory)
        if kind is m.MemoryWritten:
            state[memory] = writing if now is None or now == writing else other
        elif kind in _PATCHES and now is not None and now != other:
            state[memory] = patching
        else:
            state[memory] = other
    last: dict[str, Item] = {}
    rest: list[Item] = []
    for i in items:
        ev = i.event
        if type(ev) is m.MemoryWritten and state[ev.memory_id] != other:
            last[ev.memory_id] = i  # a later write of the same memory replaces it
        else:
            rest.append(i)
    return list(last.values()), rest


# The events that change a live memory's row without creating, deleting or re-sessioning
# it: their effect on a memory over a batch is one UPDATE of that row (see _patches).
_PATCHES = frozenset({m.MemoryAccessed, m.MemoryUpdated, m.MemoryReinforced, m.MemoryDecayed})
# the columns a patch may set, with their Arrow types (``metadata`` and ``tags`` as JSON text)
_PATCHED = (
    ("content", pa.string()), ("memory_type", pa.string()), ("tier", pa.string()),
    ("importance", pa.float64()), ("expires_at", pa.float64()), ("parent_id", pa.string()),
    ("metadata", pa.string()), ("tags", pa.string()), ("updated_at", pa.float64()),
)
_SET = ",\n    ".join(
    f"{c} = CASE WHEN p.set_{c} THEN p.{c}{'::JSON' if c in ('metadata', 'tags') else ''} "
    f"ELSE t.{c} END"
    for c, _ in _PATCHED
)
_PATCH_SQL = f"""
UPDATE <memories> AS t SET
    {_SET},
    metadata_raw = CASE WHEN p.set_metadata THEN NULL ELSE t.metadata_raw END,
    access_count = CASE WHEN p.accessed > 0 THEN coalesce(t.access_count, 0) + p.accessed
                   ELSE t.access_count END,
    last_accessed_at = CASE WHEN p.accessed > 0 THEN p.last_accessed_at
                       ELSE t.last_accessed_at END,
    last_seq = p.last_seq
FROM _mvs_patches p
WHERE t.memory_id = p.memory_id AND t.deleted IS NOT TRUE
"""
# the patched memories that are not live (after the UPDATE, which does not change that):
# asked only when the UPDATE changed fewer rows than there are patched memories. DuckDB's
# ``UPDATE ... RETURNING`` took 100-280 ms for 6k patches of a 110k-row table, against
# 11-16 ms for the UPDATE alone (measured).
_NOT_LIVE_SQL = """
SELECT p.memory_id FROM _mvs_patches p
WHERE NOT EXISTS (
    SELECT 1 FROM <memories> t WHERE t.memory_id = p.memory_id AND t.deleted IS NOT TRUE
)
"""


# the patch rows of several shares (in stream order) as one row per memory: the accesses
# added up, each column as the last share that set it left it
_MERGE_PATCHES_SQL = (
    "SELECT memory_id, sum(accessed)::BIGINT AS accessed, "
    "last(last_accessed_at ORDER BY last_seq) FILTER (WHERE accessed > 0) AS last_accessed_at, "
    "max(last_seq) AS last_seq, "
    + ", ".join(
        f"bool_or(set_{c}) AS set_{c}, last({c} ORDER BY last_seq) FILTER (WHERE set_{c}) AS {c}"
        for c, _ in _PATCHED
    )
    + " FROM _mvs_patch_rows GROUP BY memory_id"
)


def _as_one(parts: list[dict[str, pa.Table]]) -> bool:
    """Whether shares laid out one by one fold as one batch (writes, patches, rest) with the
    same effect as one after the other: no memory is written after any event of an earlier
    share touched it, and none patched after an earlier share's other event (a delete, a
    write the split left in the rest...) touched it. Patches of one memory in several
    shares are merged (see _MERGE_PATCHES_SQL)."""
    WRITTEN, PATCHED, OTHER = 0, 1, 2
    seen: dict[str, int] = {}
    for part in parts:
        written = part["writes"].column("memory_id").to_pylist()
        patched = part["patches"].column("memory_id").to_pylist()
        if any(x in seen for x in written) or any(seen.get(x) == OTHER for x in patched):
            return False
        seen.update(dict.fromkeys(written, WRITTEN))
        for x in patched:
            seen[x] = max(seen.get(x, PATCHED), PATCHED)
        for x in part["rest"].column("memory_id").to_pylist():
            if x is not None:
                seen[x] = OTHER
    return True


def _split_patches(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(the patch events of memories no other event of ``items`` reads or changes, the rest).

    Such a memory is live or not for the whole batch (no patch creates, deletes or revives
    one), so its patches all apply, or are all refused, whatever their order.
    """
    blocked = {
        i.event.memory_id  # type: ignore[attr-defined]
        for i in items
        if type(i.event) in ON_MEMORIES and type(i.event) not in _PATCHES
    }
    patches: list[Item] = []
    rest: list[Item] = []
    for i in items:
        if type(i.event) in _PATCHES and i.event.memory_id not in blocked:  # type: ignore[attr-defined]
            patches.append(i)
        else:
            rest.append(i)
    return patches, rest


def _patches(items: list[Item]) -> dict[str, dict[str, Any]]:
    """Per memory, the net effect of its patch events (in stream order) on a live row: the
    columns they set (a key present, even with None) and the accesses they count."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        ev: Any = item.event
        patch = out.get(ev.memory_id)
        if patch is None:
            patch = out[ev.memory_id] = {"accessed": 0}
        patch["last_seq"] = item.seq
        kind = type(ev)
        if kind is m.MemoryAccessed:  # as _accessed
            patch["accessed"] += 1
            patch["last_accessed_at"] = ev.occurred_at
            continue
        patch["updated_at"] = ev.occurred_at
        if kind is m.MemoryUpdated:  # as _updated (metadata_raw: set_metadata in the SQL)
            set_updated(patch, ev)
        else:  # as _reinforced
            patch["importance"] = ev.importance
            if ev.tier is not None:
                patch["tier"] = ev.tier
    return out


def _patch_table(patches: dict[str, dict[str, Any]]) -> pa.Table:
    rows = list(patches.values())
    columns: dict[str, pa.Array] = {
        "memory_id": pa.array(list(patches), pa.string()),
        "accessed": pa.array([p["accessed"] for p in rows], pa.int64()),
        "last_accessed_at": pa.array([p.get("last_accessed_at") for p in rows], pa.float64()),
        "last_seq": pa.array([p["last_seq"] for p in rows], pa.uint64()),
    }
    for name, kind in _PATCHED:
        columns[f"set_{name}"] = pa.array([name in p for p in rows], pa.bool_())
        columns[name] = pa.array([p.get(name) for p in rows], kind)
    return pa.table(columns)


# the columns of ``memories`` (memory.sql), as written_columns lays them out
_WRITTEN_SCHEMA = pa.schema([
    ("memory_id", pa.string()), ("content", pa.string()), ("memory_type", pa.string()),
    ("tier", pa.string()), ("importance", pa.float64()), ("access_count", pa.int64()),
    ("created_at", pa.float64()), ("last_accessed_at", pa.float64()),
    ("expires_at", pa.float64()), ("metadata", pa.string()), ("metadata_raw", pa.string()),
    ("tags", pa.string()), ("parent_id", pa.string()), ("session_id", pa.string()),
    ("deleted", pa.bool_()), ("updated_at", pa.float64()), ("last_seq", pa.uint64()),
])
# What prepare lays out, per share: the writes (rows of memories), the patches (one row per
# patched memory) with their events (memory, seq: to refuse them), and the seqs of the rest
# (folded one by one, with the memory each touches). ``shares`` counts each share's rows of
# each, so that shares laid out one by one and combined (Prepared.combine) can be told apart:
# they fold as one batch when that has the same effect (see _as_one), else one by one.
_LAID = ("writes", "patches", "patched", "rest")
_SHARES_SCHEMA = pa.schema([(name, pa.int64()) for name in _LAID])


class MemoryProjection(Projection):
    name = "memory"
    subjects = ("mvs.evt.memory.>",)
    schema_file = "memory.sql"
    tables = (
        "memories",
        "memory_relationships",
        "context_groups",
        "context_group_members",
        "sessions",
        "memory_embeddings",
    )
    keys: ClassVar[dict[str, tuple[str, ...]]] = {
        "memories": ("memory_id",),
        "memory_relationships": ("source_memory_id", "target_memory_id", "relationship_type"),
        "context_groups": ("group_id",),
        "context_group_members": ("group_id", "memory_id"),
        "sessions": ("session_id",),
        "memory_embeddings": ("memory_id",),
    }
    handlers = HANDLERS
    filtered = ("memories", "memory_relationships", "context_group_members", "memory_embeddings")

    def reads(self, item: Item) -> Iterable[tuple[str, Key]]:
        return ()

    # Writes of memories nothing else in the batch touches (a legacy DB's replay: nearly every
    # event) are folded column by column: measured ~13 -> ~5 us per event. Accesses, updates,
    # reinforcements and decays of memories nothing else in the batch touches are folded as
    # one UPDATE (measured on the benchmark's mix, 44% of it such events: the memory
    # projection's apply ~28 -> ~15 us per event). Off only to test that both ways give the
    # same tables.
    columnar_writes: ClassVar[bool] = True

    @property
    def prepares(self) -> bool:  # type: ignore[override]
        return self.columnar_writes

    def fold(self, con: duckdb.DuckDBPyConnection, items: list[Item]) -> list[tuple[Item, str]]:
        if not self.columnar_writes:
            return super().fold(con, items)
        return self.fold_prepared(con, self.prepare(items), items_by_seq(items))

    def prepare(self, items: list[Item]) -> dict[str, pa.Table]:
        """The batch split three ways (see :func:`_split_writes`, :func:`_split_patches`):
        the writes as rows, the patches as one row per memory, the rest to fold one by one.
        Stateless: the intake process lays memory's shares out too."""
        writes, rest = _split_writes(items)
        patches, rest = _split_patches(rest)
        laid = {
            "writes": pa.Table.from_pydict(written_columns(writes), schema=_WRITTEN_SCHEMA),
            "patches": _patch_table(_patches(patches)),
            "patched": pa.table({
                "memory_id": pa.array(
                    [i.event.memory_id for i in patches], pa.string()  # type: ignore[attr-defined]
                ),
                "seq": pa.array([i.seq for i in patches], pa.uint64()),
            }),
            "rest": pa.table({
                "seq": pa.array([i.seq for i in rest], pa.uint64()),
                # the memory whose row the event reads or changes, if any
                "memory_id": pa.array(
                    [
                        i.event.memory_id  # type: ignore[attr-defined]
                        if type(i.event) in ON_MEMORIES else None
                        for i in rest
                    ],
                    pa.string(),
                ),
            }),
        }
        laid["shares"] = pa.Table.from_pydict(
            {name: [laid[name].num_rows] for name in _LAID}, schema=_SHARES_SCHEMA
        )
        return laid

    def fold_prepared(
        self, con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], items_at: ItemsAt
    ) -> list[tuple[Item, str]]:
        shares = tables["shares"]
        if shares.num_rows == 1:
            return self._fold_share(con, tables, items_at)
        parts = []
        start = dict.fromkeys(_LAID, 0)
        for counts in shares.to_pylist():
            part = {}
            for name in _LAID:
                part[name] = tables[name].slice(start[name], counts[name])
                start[name] += counts[name]
            parts.append(part)
        if _as_one(parts):
            return self._fold_share(con, tables, items_at)
        refused: list[tuple[Item, str]] = []
        for part in parts:
            refused += self._fold_share(con, part, items_at)
        return refused

    def _fold_share(
        self, con: duckdb.DuckDBPyConnection, laid: dict[str, pa.Table], items_at: ItemsAt
    ) -> list[tuple[Item, str]]:
        """One share as one batch: its writes, its patches, then the rest (a session the
        rest creates is counted with the writes)."""
        refused: list[tuple[Item, str]] = []
        if laid["writes"].num_rows:
            self._fold_writes(con, laid["writes"])
        if laid["patches"].num_rows:
            why = self._fold_patches(con, laid["patches"])
            if why:
                patched = laid["patched"]
                seqs = [
                    seq for memory, seq in zip(
                        patched.column("memory_id").to_pylist(),
                        patched.column("seq").to_pylist(),
                        strict=True,
                    )
                    if memory in why
                ]
                refused += [(i, why[i.event.memory_id]) for i in items_at(seqs)]  # type: ignore[attr-defined]
        if laid["rest"].num_rows:
            refused += super().fold(con, items_at(laid["rest"].column("seq").to_pylist()))
        return refused

    def _fold_writes(self, con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
        """Replace (or create) the rows of the written memories with ``rows``."""
        ids = rows.column("memory_id").to_pylist()
        f = self.filters["memories"]
        if not f.loaded:
            f.load(con, self.t("memories"))
        hashes = f.hash_columns(con, [ids])
        maybe = f.maybe(hashes)
        known: list[Key] = [(k,) for k, mb in zip(ids, maybe.tolist(), strict=True) if mb]
        before = self._load(con, "memories", known) if known else {}
        self._delete(con, "memories", [k for k, row in before.items() if row is not None])
        insert_arrow(con, self.t("memories"), rows)
        f.add(hashes[~maybe])
        delta: dict[str, int] = {}
        for row in before.values():  # a replaced live memory leaves its session
            if row is not None and not row["deleted"] and row.get("session_id"):
                delta[row["session_id"]] = delta.get(row["session_id"], 0) - 1
        for session in rows.column("session_id").to_pylist():
            if session:
                delta[session] = delta.get(session, 0) + 1
        self._move_session_counts(con, delta)

    def _fold_patches(self, con: duckdb.DuckDBPyConnection, patches: pa.Table) -> dict[str, str]:
        """Apply the patches of memories only patched in this batch; the memories that do
        not exist or are deleted, with why their patch events are refused (as :func:`_live`
        does)."""
        memories = self.t("memories")
        if pc.count_distinct(patches.column("memory_id")).as_py() < patches.num_rows:
            # shares folded as one (see _as_one): a memory patched in several
            con.register("_mvs_patch_rows", patches)
            try:
                patches = con.sql(_MERGE_PATCHES_SQL).to_arrow_table()
            finally:
                con.unregister("_mvs_patch_rows")
        con.register("_mvs_patches", patches)
        try:
            (changed,) = con.execute(_PATCH_SQL.replace("<memories>", memories)).fetchall()[0]
            if changed == patches.num_rows:
                return {}
            sql = _NOT_LIVE_SQL.replace("<memories>", memories)
            missing = [(row[0],) for row in con.execute(sql).fetchall()]
        finally:
            con.unregister("_mvs_patches")
        rows = self._load(con, "memories", missing)
        # the UPDATE skipped exactly the memories that are not live
        return {k: r for (k,) in missing if (r := not_live(k, rows[(k,)])) is not None}

    def _move_session_counts(self, con: duckdb.DuckDBPyConnection, delta: dict[str, int]) -> None:
        moved = {s: d for s, d in delta.items() if d}
        if not moved:
            return
        con.register(
            "_mvs_moved", pa.table({"session_id": list(moved), "d": list(moved.values())})
        )
        try:
            con.execute(
                f"UPDATE {self.t('sessions')} s SET memory_count = s.memory_count + m.d "
                "FROM _mvs_moved m WHERE s.session_id = m.session_id"
            )
        finally:
            con.unregister("_mvs_moved")

    def after_fold(self, con: duckdb.DuckDBPyConnection, ctx: FoldContext) -> None:
        # memory_count is derived. A session created in this batch is counted from the
        # memories table (once per session); any other session's count moves by the live
        # memories it gained or lost in this batch, so no batch scans the whole table.
        created = {
            k[0] for k, v in ctx.state.get("sessions", {}).items()
            if v is not None and ctx.before["sessions"].get(k) is None
        }
        delta: dict[str, int] = {}
        mem_now, mem_before = ctx.state.get("memories", {}), ctx.before.get("memories", {})
        for key, row in mem_now.items():
            old = mem_before.get(key)
            if row is old:
                continue
            for r, d in ((old, -1), (row, 1)):
                if r is not None and not r["deleted"] and r.get("session_id"):
                    delta[r["session_id"]] = delta.get(r["session_id"], 0) + d
        self._move_session_counts(con, {s: d for s, d in delta.items() if s not in created})
        if not created:
            return
        sessions = self.t("sessions")
        con.register("_mvs_sessions", pa.table({"session_id": sorted(created)}))
        try:
            con.execute(
                f"""
                UPDATE {sessions} s SET memory_count = coalesce(c.n, 0)
                FROM _mvs_sessions k LEFT JOIN (
                    SELECT session_id, count(*) AS n FROM {self.t("memories")}
                    WHERE NOT deleted AND session_id IN (SELECT session_id FROM _mvs_sessions)
                    GROUP BY session_id
                ) c ON c.session_id = k.session_id
                WHERE s.session_id = k.session_id
                """
            )
        finally:
            con.unregister("_mvs_sessions")
