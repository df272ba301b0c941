"""All event types, their union, and the one codec for the event log.

Events travel as MessagePack (the plan's message-bus protocol). Decoding also accepts JSON, so
users can publish events by hand (``nats pub mvs.evt.memory.m1 '{"type": ...}'``): a top-level
JSON object starts with ``{`` (0x7b) or whitespace, and an event in MessagePack always starts
with a map header (0x80 and up), so the first byte tells the two apart. Any payload starting
below 0x80 is read as JSON, which gives the clearer error for the text people type by hand.
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
    "EVENT_TYPES_BY_TAG",
    "AnyEvent",
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

# A Union built from the tuple: ``X | Y`` syntax cannot splat a tuple, hence the noqa.
AnyEvent = Union[ALL_EVENTS]  # type: ignore[valid-type]  # noqa: UP007

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


def _reject_ext(code: int, data: memoryview) -> Any:
    # Free-form (``Any``) fields hold JSON-like values: an extension type would decode here
    # and then break every consumer that writes the field out as JSON.
    raise DecodeError(f"not a valid MVS event: MessagePack extension type {code} in a field")


_msgpack_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
    AnyEvent, ext_hook=_reject_ext
)
_json_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)


def encode_event(event: Event) -> bytes:
    return _msgpack_encoder.encode(event)


def encode_event_json(event: Event) -> bytes:
    return _json_encoder.encode(event)


def decode_event_raw(data: bytes) -> Event:
    """Decode to the stored version, without upcasting.

    Every failure is a :class:`~mvs.errors.DecodeError` whose message names the problem (an
    unknown tag, a missing field, a field of the wrong type and where it is).
    """
    try:
        if data[:1] and data[0] < 0x80:
            event: Event = _json_decoder.decode(data)
            # JSON allows integers MessagePack cannot hold; catch them here rather than in
            # whichever consumer re-encodes the event for the log.
            _msgpack_encoder.encode(event)
            return event
        return _msgpack_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"not a valid MVS event: {exc}") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(f"undecodable event payload ({len(data)} bytes): {exc}") from exc
    except OverflowError as exc:
        raise DecodeError(f"not a valid MVS event: an integer out of range ({exc})") from exc
    except RecursionError as exc:
        raise DecodeError(f"not a valid MVS event: nested too deeply ({exc})") from exc


def decode_event(data: bytes) -> Event:
    """Decode an event from MessagePack or JSON and upcast it to its current version."""
    return upcast(decode_event_raw(data))


def subject_of(event: Event) -> str:
    return event_subject(type(event).domain, event.key())
