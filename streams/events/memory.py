"""Memory: writes, updates, deletes, access, reinforcement, decay, relationships, groups.

Memory state is never stored by a service: it is the projection of these events.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from msgspec import UNSET, UnsetType

from streams.base import Event


class MemoryWritten(Event, frozen=True, kw_only=True, tag="memory.written.v1"):
    """A memory created (or re-imported as a whole) with all its fields.

    ``metadata_raw`` keeps legacy metadata that was not valid JSON, byte for byte;
    ``tags_raw`` does the same for legacy tags, and ``relationships_raw`` keeps the legacy
    row's embedded ``relationships`` JSON text (the relationship table is replayed on its own).
    """

    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "memory_id"

    memory_id: str
    content: str
    memory_type: str = "general"
    tier: str = "short"
    importance: float = 0.5
    access_count: int = 0
    created_at: float | None = None
    last_accessed_at: float | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    metadata_raw: str | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    parent_id: str | None = None
    session_id: str | None = None
    tags_raw: str | None = None
    relationships_raw: str | None = None


class MemoryUpdated(Event, frozen=True, kw_only=True, tag="memory.updated.v1"):
    """Changed fields only; UNSET fields are left as they were."""

    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "memory_id"

    memory_id: str
    content: str | UnsetType = UNSET
    memory_type: str | UnsetType = UNSET
    tier: str | UnsetType = UNSET
    importance: float | UnsetType = UNSET
    expires_at: float | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    parent_id: str | UnsetType | None = UNSET


class MemoryDeleted(Event, frozen=True, kw_only=True, tag="memory.deleted.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "memory_id"

    memory_id: str
    reason: str = ""


class MemoryAccessed(Event, frozen=True, kw_only=True, tag="memory.accessed.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "memory_id"

    memory_id: str


class MemoryReinforced(Event, frozen=True, kw_only=True, tag="memory.reinforced.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "memory_id"

    memory_id: str
    importance: float
    tier: str | None = None


class MemoryDecayed(Event, frozen=True, kw_only=True, tag="memory.decayed.v1"):
    """The periodic decay of one memory, with its new importance and tier."""

    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "memory_id"

    memory_id: str
    importance: float
    tier: str


class MemoryEmbedded(Event, frozen=True, kw_only=True, tag="memory.embedded.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "memory_id"

    memory_id: str
    model: str
    vector: list[float]


class RelationshipAdded(Event, frozen=True, kw_only=True, tag="memory.relationship_added.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "source_memory_id"

    source_memory_id: str
    target_memory_id: str
    relationship_type: str = "related"
    strength: float = 1.0
    relationship_id: str | None = None
    created_at: float | None = None


class RelationshipRemoved(Event, frozen=True, kw_only=True, tag="memory.relationship_removed.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "source_memory_id"

    source_memory_id: str
    target_memory_id: str
    relationship_type: str = "related"


class ContextGroupCreated(Event, frozen=True, kw_only=True, tag="memory.group_created.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "group_id"

    group_id: str
    name: str
    description: str = ""
    created_at: float | None = None


class MemoryGrouped(Event, frozen=True, kw_only=True, tag="memory.grouped.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "group_id"

    group_id: str
    memory_id: str
    created_at: float | None = None


class SessionStarted(Event, frozen=True, kw_only=True, tag="memory.session_started.v1"):
    domain: ClassVar[str] = "memory"
    key_field: ClassVar[str | None] = "session_id"

    session_id: str
    user_id: str | None = None
    started_at: float | None = None
    summary: str = ""


EVENTS = (
    MemoryWritten,
    MemoryUpdated,
    MemoryDeleted,
    MemoryAccessed,
    MemoryReinforced,
    MemoryDecayed,
    MemoryEmbedded,
    RelationshipAdded,
    RelationshipRemoved,
    ContextGroupCreated,
    MemoryGrouped,
    SessionStarted,
)
