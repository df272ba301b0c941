"""Reading what the event log holds, for tests: by count, never by waiting for silence.

A loop of ``next_msg(timeout=1)`` until it times out reads "whatever came within a second of
the last one": on a loaded machine a stored event can come later than that and be missed.
Here the stream says how many messages match first, and exactly those are read (the wait is
only a hang guard).
"""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext

from streams.catalog import decode_event
from streams.definitions import EVENTS_STREAM


async def stored_count(js: JetStreamContext, subject: str, stream: str = EVENTS_STREAM) -> int:
    """How many messages ``stream`` holds under ``subject`` (NATS wildcards) right now."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def stored_messages(
    js: JetStreamContext, subject: str, stream: str = EVENTS_STREAM, timeout: float = 30.0
) -> list[Any]:
    """The messages stored under ``subject`` when called, in log order."""
    count = await stored_count(js, subject, stream)
    if count == 0:
        return []
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=timeout) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def stored_events(
    js: JetStreamContext, subject: str = "mvs.evt.>", timeout: float = 30.0
) -> list[Any]:
    """The events stored under ``subject`` when called, decoded, in log order."""
    return [decode_event(m.data) for m in await stored_messages(js, subject, timeout=timeout)]
