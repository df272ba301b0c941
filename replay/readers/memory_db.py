"""L1: the legacy memory database ``unified_memory.db`` (MemoryOrchestratorService).

Rows keep their legacy values: invalid JSON metadata or tags go to ``metadata_raw`` /
``tags_raw`` byte for byte, dangling ``parent_id`` stays as it was (verification reports it),
NULL times stay NULL. Session memories (``memory_type=interaction``) carry their session,
which the legacy service stored in ``parent_id``.
"""

from __future__ import annotations

from typing import Any

from replay.model import (
    BadValue,
    Record,
    event_id,
    parse_json,
    to_float,
    to_int,
    to_text,
    to_time,
)
from replay.readers.sqlite_base import Ctx, SqliteReader, TableMap
from streams.events.memory import (
    ContextGroupCreated,
    MemoryGrouped,
    MemoryWritten,
    RelationshipAdded,
)

__all__ = ["READER", "memory_fields"]

MEMORY_COLUMNS = (
    "memory_id",
    "content",
    "memory_type",
    "memory_tier",
    "importance",
    "access_count",
    "last_accessed_at",
    "created_at",
    "expires_at",
    "metadata",
    "tags",
    "relationships",
    "parent_id",
)


def _tags(value: Any) -> tuple[list[str], str | None]:
    parsed, ok = parse_json(value)
    if not ok:
        return [], to_text(value)
    if parsed is None:
        return [], None
    if isinstance(parsed, list):
        return [to_text(t) for t in parsed], None
    if isinstance(parsed, str):
        return [parsed], None
    return [], to_text(value)


def memory_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The MemoryWritten fields of one legacy memory row (raises BadValue)."""
    mid = to_text(row.get("memory_id")).strip()
    if not mid:
        raise BadValue("memory_id: missing")
    if row.get("content") is None:
        raise BadValue("content: NULL in a NOT NULL column")
    meta, ok = parse_json(row.get("metadata"))
    metadata_raw = None
    if not ok or (meta is not None and not isinstance(meta, dict)):
        metadata_raw, meta = to_text(row.get("metadata")), None
    tags, tags_raw = _tags(row.get("tags"))
    rel = row.get("relationships")
    rel_text = None if rel is None or to_text(rel).strip() in ("", "[]", "{}") else to_text(rel)
    parent = row.get("parent_id")
    parent_id = None if parent is None or to_text(parent) == "" else to_text(parent)
    memory_type = to_text(row.get("memory_type"), "general") or "general"
    return {
        "memory_id": mid,
        "content": to_text(row.get("content")),
        "memory_type": memory_type,
        "tier": to_text(row.get("memory_tier"), "short") or "short",
        "importance": to_float(row.get("importance"), "importance", 0.5),
        "access_count": to_int(row.get("access_count"), "access_count", 0),
        "created_at": to_time(row.get("created_at"), "created_at"),
        "last_accessed_at": to_time(row.get("last_accessed_at"), "last_accessed_at"),
        "expires_at": to_time(row.get("expires_at"), "expires_at"),
        "metadata": meta or {},
        "metadata_raw": metadata_raw,
        "tags": tags,
        "tags_raw": tags_raw,
        "relationships_raw": rel_text,
        "parent_id": parent_id,
        "session_id": parent_id if memory_type == "interaction" else None,
    }


def _memory(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    f = memory_fields(row)
    at = f["created_at"]
    findings = []
    if f["metadata_raw"] is not None:
        findings.append("invalid_json_metadata")
    if f["tags_raw"] is not None:
        findings.append("invalid_json_tags")
    if at is None:
        findings.append("null_created_at")
    ev = MemoryWritten(
        event_id=event_id(ctx.fmt, "memory", f["memory_id"], tuple(row.values())),
        occurred_at=at if at is not None else (f["last_accessed_at"] or ctx.mtime),
        source=ctx.source,
        **f,
    )
    return Record(events=(ev,), entity="memories", at=at, findings=tuple(findings))


def _relationship(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    src, dst = to_text(row.get("source_memory_id")), to_text(row.get("target_memory_id"))
    if not src or not dst:
        raise BadValue("source_memory_id/target_memory_id: missing")
    at = to_time(row.get("created_at"), "created_at")
    updated = to_time(row.get("updated_at"), "updated_at")
    rid = row.get("id")
    ev = RelationshipAdded(
        event_id=event_id(ctx.fmt, "relationship", rid, tuple(row.values())),
        occurred_at=updated or at or ctx.mtime,
        source=ctx.source,
        source_memory_id=src,
        target_memory_id=dst,
        relationship_type=to_text(row.get("relationship_type"), "related") or "related",
        strength=to_float(row.get("strength"), "strength", 1.0) or 0.0,
        relationship_id=None if rid is None else to_text(rid),
        created_at=at,
    )
    return Record(events=(ev,), entity="memory_relationships", at=at)


def _group(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    gid = to_text(row.get("id"), str(rowid))
    if row.get("name") is None:
        raise BadValue("name: NULL in a NOT NULL column")
    at = to_time(row.get("created_at"), "created_at")
    ev = ContextGroupCreated(
        event_id=event_id(ctx.fmt, "group", gid, tuple(row.values())),
        occurred_at=at or ctx.mtime,
        source=ctx.source,
        group_id=gid,
        name=to_text(row.get("name")),
        description=to_text(row.get("description")),
        created_at=at,
    )
    return Record(events=(ev,), entity="context_groups", at=at)


def _grouped(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    mid, gid = to_text(row.get("memory_id")), to_text(row.get("group_id"))
    if not mid or not gid:
        raise BadValue("memory_id/group_id: missing")
    at = to_time(row.get("created_at"), "created_at")
    ev = MemoryGrouped(
        event_id=event_id(ctx.fmt, "grouped", row.get("id"), tuple(row.values())),
        occurred_at=at or ctx.mtime,
        source=ctx.source,
        group_id=gid,
        memory_id=mid,
        created_at=at,
    )
    return Record(events=(ev,), entity="context_group_members", at=at)


READER = SqliteReader(
    "L1",
    "memory-db",
    (
        TableMap("memories", ("memory_id", "content"), MEMORY_COLUMNS, "memories", _memory),
        TableMap(
            "memory_relationships",
            ("source_memory_id", "target_memory_id"),
            (
                "id",
                "source_memory_id",
                "target_memory_id",
                "relationship_type",
                "strength",
                "created_at",
                "updated_at",
            ),
            "memory_relationships",
            _relationship,
        ),
        TableMap(
            "context_groups",
            ("name",),
            ("id", "name", "description", "created_at", "updated_at"),
            "context_groups",
            _group,
        ),
        TableMap(
            "memory_group_mappings",
            ("memory_id", "group_id"),
            ("id", "memory_id", "group_id", "created_at"),
            "context_group_members",
            _grouped,
        ),
    ),
    identifying=1,  # a memory DB is recognised by its memories table
)

