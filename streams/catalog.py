"""All event types, their union, and the one codec for the event log.

Events travel as MessagePack (the plan's message-bus protocol). Decoding also accepts JSON, so
users can publish events by hand (``nats pub mvs.evt.memory.m1 '{"type": ...}'``): a top-level
JSON object starts with ``{`` (0x7b), which is never the first byte of a MessagePack map.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

from mvs.errors import DecodeError
from streams.base import Event
from streams.events import language, legacy, memory, models, requests, system
from streams.subjects import event_subject
from streams.upcasters import upcast

__all__ = [
    "ALL_EVENTS",
    "AnyEvent",
    "EVENT_TYPES_BY_TAG",
    "decode_event",
    "decode_event_raw",
    "encode_event",
    "encode_event_json",
    "subject_of",
]

ALL_EVENTS: tuple[type[Event], ...] = (
    *requests.EVENTS,
    *models.EVENTS,
    *memory.EVENTS,
    *system.EVENTS,
    *language.EVENTS,
    *legacy.EVENTS,
)

EVENT_TYPES_BY_TAG: dict[str, type[Event]] = {
    str(t.__struct_config__.tag): t for t in ALL_EVENTS
}
if len(EVENT_TYPES_BY_TAG) != len(ALL_EVENTS):  # pragma: no cover - a programming error
    raise RuntimeError("two event types share a tag")

AnyEvent = Union[ALL_EVENTS]  # type: ignore[valid-type]  # a Union built from the tuple

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_msgpack_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(AnyEvent)
_json_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    return _msgpack_encoder.encode(event)


def encode_event_json(event: Event) -> bytes:
    return _json_encoder.encode(event)


def decode_event_raw(data: bytes) -> Event:
    """Decode to the stored version, without upcasting."""
    try:
        if data[:1] == b"{":
            return _json_decoder.decode(data)  # type: ignore[no-any-return]
        return _msgpack_decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise DecodeError(f"not a valid MVS event: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(f"undecodable event payload ({len(data)} bytes): {exc}") from exc


def decode_event(data: bytes) -> Event:
    """Decode an event from MessagePack or JSON and upcast it to its current version."""
    return upcast(decode_event_raw(data))


def subject_of(event: Event) -> str:
    return event_subject(type(event).domain, event.key())
