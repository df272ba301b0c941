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
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
from msgspec import UNSET

from projections.base import (
    DELETE,
    Append,
    FoldContext,
    Invalid,
    Item,
    Key,
    Merge,
    Projection,
    Row,
    dumps,
)
from streams.base import Event
from streams.events import memory as m

__all__ = ["MemoryProjection"]


def _mem_key(item: Item) -> Key:
    return (item.event.memory_id,)  # type: ignore[attr-defined]


def _written(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.MemoryWritten = item.event  # type: ignore[assignment]
    return {
        "memory_id": ev.memory_id,
        "content": ev.content,
        "memory_type": ev.memory_type,
        "tier": ev.tier,
        "importance": ev.importance,
        "access_count": ev.access_count,
        "created_at": ev.created_at if ev.created_at is not None else ev.occurred_at,
        "last_accessed_at": ev.last_accessed_at,
        "expires_at": ev.expires_at,
        "metadata": dumps(ev.metadata),
        "metadata_raw": ev.metadata_raw,
        "tags": dumps(ev.tags),
        "parent_id": ev.parent_id,
        "session_id": ev.session_id,
        "deleted": False,
        "updated_at": ev.occurred_at,
    }


def _live(old: Row | None, item: Item) -> Row:
    if old is None:
        raise Invalid(f"memory {item.event.memory_id!r} does not exist")  # type: ignore[attr-defined]
    if old["deleted"]:
        raise Invalid(f"memory {item.event.memory_id!r} is deleted")  # type: ignore[attr-defined]
    return dict(old)


_UPDATABLE = ("content", "memory_type", "tier", "importance", "expires_at", "parent_id")


def _updated(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.MemoryUpdated = item.event  # type: ignore[assignment]
    row = _live(old, item)
    for name in _UPDATABLE:
        value = getattr(ev, name)
        if value is not UNSET:
            row[name] = value
    if ev.metadata is not UNSET:
        row["metadata"] = dumps(ev.metadata)
        row["metadata_raw"] = None
    if ev.tags is not UNSET:
        row["tags"] = dumps(ev.tags)
    row["updated_at"] = ev.occurred_at
    return row


def _deleted(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    row = _live(old, item)
    row["deleted"] = True
    row["updated_at"] = item.event.occurred_at
    return row


def _accessed(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    row = _live(old, item)
    row["access_count"] = (row["access_count"] or 0) + 1
    row["last_accessed_at"] = item.event.occurred_at
    return row


def _reinforced(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.MemoryReinforced | m.MemoryDecayed = item.event  # type: ignore[assignment]
    row = _live(old, item)
    row["importance"] = ev.importance
    if ev.tier is not None:
        row["tier"] = ev.tier
    row["updated_at"] = ev.occurred_at
    return row


def _check_live(old: Row | None, item: Item, ctx: FoldContext) -> Row | None:
    _live(old, item)
    return old


def _embedded(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.MemoryEmbedded = item.event  # type: ignore[assignment]
    return {"memory_id": ev.memory_id, "model": ev.model, "vector": list(ev.vector)}


def _rel_key(item: Item) -> Key:
    ev: Any = item.event
    return (ev.source_memory_id, ev.target_memory_id, ev.relationship_type)


def _rel_added(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.RelationshipAdded = item.event  # type: ignore[assignment]
    return {
        "source_memory_id": ev.source_memory_id,
        "target_memory_id": ev.target_memory_id,
        "relationship_type": ev.relationship_type,
        "strength": ev.strength,
        "relationship_id": ev.relationship_id,
        "created_at": ev.created_at if ev.created_at is not None else ev.occurred_at,
    }


def _rel_removed(old: Row | None, item: Item, ctx: FoldContext) -> Any:
    return old if old is None else DELETE


def _group_created(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.ContextGroupCreated = item.event  # type: ignore[assignment]
    return {
        "group_id": ev.group_id,
        "name": ev.name,
        "description": ev.description,
        "created_at": ev.created_at if ev.created_at is not None else ev.occurred_at,
    }


def _grouped(old: Row | None, item: Item, ctx: FoldContext) -> Row | None:
    if old is not None:
        return old
    ev: m.MemoryGrouped = item.event  # type: ignore[assignment]
    return {
        "group_id": ev.group_id,
        "memory_id": ev.memory_id,
        "created_at": ev.created_at if ev.created_at is not None else ev.occurred_at,
    }


def _session(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.SessionStarted = item.event  # type: ignore[assignment]
    return {
        "session_id": ev.session_id,
        "user_id": ev.user_id,
        "started_at": ev.started_at if ev.started_at is not None else ev.occurred_at,
        "summary": ev.summary,
        "memory_count": old["memory_count"] if old else 0,
    }


def _on_memory(fn: Any) -> tuple[Merge, ...]:
    return (Merge("memories", _mem_key, fn),)


_HANDLERS: dict[type[Event], tuple[Append | Merge, ...]] = {
    m.MemoryWritten: _on_memory(_written),
    m.MemoryUpdated: _on_memory(_updated),
    m.MemoryDeleted: _on_memory(_deleted),
    m.MemoryAccessed: _on_memory(_accessed),
    m.MemoryReinforced: _on_memory(_reinforced),
    m.MemoryDecayed: _on_memory(_reinforced),
    m.MemoryEmbedded: (
        Merge("memories", _mem_key, _check_live),
        Merge("memory_embeddings", _mem_key, _embedded),
    ),
    m.RelationshipAdded: (Merge("memory_relationships", _rel_key, _rel_added),),
    m.RelationshipRemoved: (Merge("memory_relationships", _rel_key, _rel_removed),),
    m.ContextGroupCreated: (
        Merge("context_groups", lambda i: (i.event.group_id,), _group_created),  # type: ignore[attr-defined]
    ),
    m.MemoryGrouped: (
        Merge(
            "context_group_members",
            lambda i: (i.event.group_id, i.event.memory_id),  # type: ignore[attr-defined]
            _grouped,
        ),
    ),
    m.SessionStarted: (
        Merge("sessions", lambda i: (i.event.session_id,), _session),  # type: ignore[attr-defined]
    ),
}


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
    handlers = _HANDLERS
    filtered = ("memories", "memory_relationships", "context_group_members", "memory_embeddings")

    def reads(self, item: Item) -> Iterable[tuple[str, Key]]:
        return ()

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
        moved = {s: d for s, d in delta.items() if d and s not in created}
        sessions = self.t("sessions")
        if moved:
            con.register(
                "_mvs_moved",
                pa.table({"session_id": list(moved), "d": list(moved.values())}),
            )
            try:
                con.execute(
                    f"UPDATE {sessions} s SET memory_count = s.memory_count + m.d "
                    "FROM _mvs_moved m WHERE s.session_id = m.session_id"
                )
            finally:
                con.unregister("_mvs_moved")
        if not created:
            return
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
