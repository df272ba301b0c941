"""The ``history`` projection: every event of the log as one row of ``events``."""

from __future__ import annotations

from typing import ClassVar

from projections.base import Append, Item, Merge, Projection, Row
from streams.base import Event
from streams.catalog import ALL_EVENTS, encode_event_json

__all__ = ["HistoryProjection"]


def _row(item: Item) -> Row:
    ev = item.event
    return {
        "seq": item.seq,
        "subject": item.subject,
        "type": ev.type_tag,
        "event_id": ev.event_id,
        "occurred_at": ev.occurred_at,
        "source": ev.source,
        "correlation_id": ev.correlation_id,
        "domain": type(ev).domain,
        "key": ev.key(),
        "payload": encode_event_json(ev).decode(),
    }


_APPEND: tuple[Append | Merge, ...] = (Append("events", _row),)


class HistoryProjection(Projection):
    name = "history"
    subjects = ("mvs.evt.>",)
    schema_file = "history.sql"
    tables = ("events",)
    # The history mirrors the log, including an event published twice: no dedup.
    dedup = False
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = dict.fromkeys(
        ALL_EVENTS, _APPEND
    )
