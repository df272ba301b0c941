"""The model pool: loads, unloads and evictions with measured memory."""

from __future__ import annotations

from typing import ClassVar, Literal

from streams.base import Event

UnloadReason = Literal["idle", "requested", "evicted", "shutdown", "failed"]


class ModelLoaded(Event, frozen=True, kw_only=True, tag="model.loaded.v1"):
    domain: ClassVar[str] = "model"
    key_field: ClassVar[str | None] = "model_id"

    model_id: str
    kind: str
    backend: str
    host: str = "mainpc"
    memory_mb: float = 0.0
    load_ms: float = 0.0


class ModelUnloaded(Event, frozen=True, kw_only=True, tag="model.unloaded.v1"):
    domain: ClassVar[str] = "model"
    key_field: ClassVar[str | None] = "model_id"

    model_id: str
    reason: UnloadReason
    host: str = "mainpc"
    memory_freed_mb: float = 0.0
    idle_s: float = 0.0


class ModelEvicted(Event, frozen=True, kw_only=True, tag="model.evicted.v1"):
    domain: ClassVar[str] = "model"
    key_field: ClassVar[str | None] = "model_id"

    model_id: str
    to_make_room_for: str
    host: str = "mainpc"
    memory_mb: float = 0.0
    memory_freed_mb: float = 0.0


class ModelLoadFailed(Event, frozen=True, kw_only=True, tag="model.load_failed.v1"):
    domain: ClassVar[str] = "model"
    key_field: ClassVar[str | None] = "model_id"

    model_id: str
    error: str
    host: str = "mainpc"


EVENTS = (ModelLoaded, ModelUnloaded, ModelEvicted, ModelLoadFailed)
