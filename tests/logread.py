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


async def stored_events(
    js: JetStreamContext, subject: str = "mvs.evt.>", timeout: float = 30.0
) -> list[Any]:
    """The events stored under ``subject`` (NATS wildcards) when called, decoded, in log
    order: as many as the stream counts under it, each awaited at most ``timeout`` s."""
    info = await js.stream_info(EVENTS_STREAM, subjects_filter=subject)
    count = sum((info.state.subjects or {}).values())
    if count == 0:
        return []
    sub = await js.subscribe(subject, stream=EVENTS_STREAM, ordered_consumer=True)
    try:
        return [decode_event((await sub.next_msg(timeout=timeout)).data) for _ in range(count)]
    finally:
        await sub.unsubscribe()
