"""The base of every MVS event: a frozen, keyword-only msgspec Struct with a versioned tag.

Schema evolution rules: a new field always gets a default; a field never changes type; a
breaking change adds a new ``.vN`` type, keeps the old one decodable and registers an upcaster
(:mod:`streams.upcasters`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

import msgspec

__all__ = ["Event", "new_event_id", "now"]


def now() -> float:
    """Wall-clock time as epoch seconds, the time unit of every event."""
    return time.time()


def new_event_id() -> str:
    return uuid.uuid4().hex


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields common to all events.

    ``event_id`` doubles as the JetStream ``Nats-Msg-Id``: publishing the same event twice
    inside the duplicate window stores it once. Producers that replay data derive it
    deterministically from their input. ``subject_key`` names the entity the event is about;
    it becomes the last token(s) of the subject (see :mod:`streams.subjects`).
    """

    # The subject prefix below ``mvs.evt`` for this event type, e.g. ``"memory"``.
    domain: ClassVar[str] = "misc"
    # The attribute that names the entity (aggregate) the event is about.
    key_field: ClassVar[str | None] = None

    event_id: str = msgspec.field(default_factory=new_event_id)
    occurred_at: float = msgspec.field(default_factory=now)
    source: str = ""
    correlation_id: str | None = None

    @property
    def type_tag(self) -> str:
        return str(type(self).__struct_config__.tag)

    def key(self) -> str | None:
        field = type(self).key_field
        if field is None:
            return None
        value: Any = getattr(self, field)
        return None if value is None else str(value)
