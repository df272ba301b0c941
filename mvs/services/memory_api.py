"""The request and reply types of MemoryOrchestratorService, importable without the service.

Callers (RequestCoordinator, ``mvs`` commands, tests) need the wire types but not DuckDB or
the embedding model, so the types live apart from :mod:`mvs.services.memory`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "TIERS",
    "ContextGroupAdd",
    "ContextGroupReply",
    "FactAdd",
    "FactQuery",
    "GroupMember",
    "MemoryAdd",
    "MemoryHit",
    "MemoryId",
    "MemoryList",
    "MemoryRecord",
    "MemoryRef",
    "MemorySearch",
    "MemoryUpdate",
    "Reinforce",
    "RelationshipAdd",
    "RelationshipList",
    "RelationshipRecord",
    "SessionQuery",
    "SessionStart",
    "Tier",
]

Tier = Literal["short", "medium", "long"]
TIERS: tuple[Tier, ...] = ("short", "medium", "long")


class _Req(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class MemoryAdd(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    content: str
    memory_type: str = "general"
    tier: Tier = "short"
    importance: float = 0.5
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    parent_id: str | None = None
    session_id: str | None = None
    expires_at: float | None = None
    memory_id: str | None = None  # a caller-chosen id makes a retried add idempotent
    embed: bool = True


class MemoryRef(msgspec.Struct, frozen=True, kw_only=True):
    """What a write returns: the memory and the stream sequence of its event."""

    memory_id: str
    seq: int = 0


class MemoryId(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    memory_id: str
    reason: str = ""


class MemoryUpdate(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    memory_id: str
    content: str | None = None
    memory_type: str | None = None
    tier: Tier | None = None
    importance: float | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None


class Reinforce(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    memory_id: str
    amount: float = 0.1


class MemoryRecord(msgspec.Struct, frozen=True, kw_only=True):
    memory_id: str
    content: str
    memory_type: str
    tier: str
    importance: float
    access_count: int
    created_at: float | None = None
    last_accessed_at: float | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    tags: list[str] = msgspec.field(default_factory=list)
    parent_id: str | None = None
    session_id: str | None = None
    updated_at: float | None = None


class MemorySearch(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Semantic search (MiniLM cosine similarity); ``text`` mode is a plain substring match."""

    query: str
    limit: int = 5
    mode: Literal["semantic", "text"] = "semantic"
    memory_type: str | None = None
    session_id: str | None = None
    min_score: float = 0.0


class MemoryHit(msgspec.Struct, frozen=True, kw_only=True):
    memory: MemoryRecord
    score: float


class MemoryList(msgspec.Struct, frozen=True, kw_only=True):
    results: list[MemoryHit]
    search_ms: float = 0.0


class RelationshipAdd(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source_memory_id: str
    target_memory_id: str
    relationship_type: str = "related"
    strength: float = 1.0


class RelationshipRecord(msgspec.Struct, frozen=True, kw_only=True):
    source_memory_id: str
    target_memory_id: str
    relationship_type: str
    strength: float


class RelationshipList(msgspec.Struct, frozen=True, kw_only=True):
    relationships: list[RelationshipRecord]


class ContextGroupAdd(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    group_id: str | None = None


class GroupMember(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    group_id: str
    memory_id: str


class ContextGroupReply(msgspec.Struct, frozen=True, kw_only=True):
    group_id: str
    name: str
    description: str = ""
    memory_ids: list[str] = msgspec.field(default_factory=list)
    seq: int = 0


class SessionStart(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    session_id: str
    user_id: str | None = None
    summary: str = ""


class SessionQuery(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    session_id: str
    limit: int = 50


class FactAdd(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    topic: str
    content: str
    importance: float = 0.7
    tags: list[str] = msgspec.field(default_factory=list)


class FactQuery(_Req, frozen=True, kw_only=True, forbid_unknown_fields=True):
    topic: str | None = None
    query: str | None = None
    limit: int = 10
