"""The memory projection's rows, one event at a time: the reference definitions.

:class:`~projections.memory.MemoryProjection` folds most of a batch set-based (see there);
these handlers fold the rest, and the tests check the set-based fold against them
(``MemoryProjection.columnar_writes = False``). The semantics are in
:mod:`projections.memory`'s docstring.
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from projections.base import DELETE, Append, FoldContext, Invalid, Item, Key, Merge, Row, dumps
from streams.base import Event
from streams.events import memory as m

__all__ = ["HANDLERS", "ON_MEMORIES", "not_live", "set_updated", "written_columns"]


def _mem_key(item: Item) -> Key:
    return (item.event.memory_id,)  # type: ignore[attr-defined]


def written_columns(items: list[Item]) -> dict[str, list[Any]]:
    """The ``memories`` rows of ``MemoryWritten`` items, column by column.

    The one definition of a written memory: the generic fold takes it one row at a time
    (:func:`_written`), :meth:`MemoryProjection.fold` a batch at a time.
    """
    evs: list[m.MemoryWritten] = [i.event for i in items]  # type: ignore[misc]
    n = len(evs)
    return {
        "memory_id": [e.memory_id for e in evs],
        "content": [e.content for e in evs],
        "memory_type": [e.memory_type for e in evs],
        "tier": [e.tier for e in evs],
        "importance": [e.importance for e in evs],
        "access_count": [e.access_count for e in evs],
        "created_at": [e.occurred_at if e.created_at is None else e.created_at for e in evs],
        "last_accessed_at": [e.last_accessed_at for e in evs],
        "expires_at": [e.expires_at for e in evs],
        "metadata": [dumps(e.metadata) for e in evs],
        "metadata_raw": [e.metadata_raw for e in evs],
        "tags": [dumps(e.tags) for e in evs],
        "parent_id": [e.parent_id for e in evs],
        "session_id": [e.session_id for e in evs],
        "deleted": [False] * n,
        "updated_at": [e.occurred_at for e in evs],
        "last_seq": [i.seq for i in items],
    }


def _written(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    return {name: column[0] for name, column in written_columns([item]).items()}


def not_live(memory_id: str, row: Row | None) -> str | None:
    """Why an event on this memory, whose row is ``row``, is refused (None: it is live)."""
    if row is None:
        return f"memory {memory_id!r} does not exist"
    if row["deleted"]:
        return f"memory {memory_id!r} is deleted"
    return None


def _live(old: Row | None, item: Item) -> Row:
    why = not_live(item.event.memory_id, old)  # type: ignore[attr-defined]
    if why is not None:
        raise Invalid(why)
    assert old is not None
    return dict(old)


_UPDATABLE = ("content", "memory_type", "tier", "importance", "expires_at", "parent_id")


def set_updated(target: dict[str, Any], ev: m.MemoryUpdated) -> None:
    """Set in ``target`` the fields ``ev`` carries (metadata and tags as JSON text)."""
    for name in _UPDATABLE:
        value = getattr(ev, name)
        if value is not UNSET:
            target[name] = value
    if ev.metadata is not UNSET:
        target["metadata"] = dumps(ev.metadata)
    if ev.tags is not UNSET:
        target["tags"] = dumps(ev.tags)


def _updated(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: m.MemoryUpdated = item.event  # type: ignore[assignment]
    row = _live(old, item)
    set_updated(row, ev)
    if ev.metadata is not UNSET:
        row["metadata_raw"] = None
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


HANDLERS: dict[type[Event], tuple[Append | Merge, ...]] = {
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


# the event types whose fold reads or changes a row of ``memories``
ON_MEMORIES = frozenset(
    t for t, hs in HANDLERS.items()
    if any(isinstance(h, Merge) and h.table == "memories" for h in hs)
)
