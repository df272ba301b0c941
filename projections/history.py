"""The ``history`` projection: every event of the log as one row of ``events``."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from projections.base import Append, Item, Merge, Projection, Row
from streams.base import Event
from streams.catalog import ALL_EVENTS

__all__ = ["HistoryProjection"]


# per type: (tag, domain, key field), looked up once per event instead of three attributes
_META = {
    t: (str(t.__struct_config__.tag), t.domain, t.key_field) for t in ALL_EVENTS
}
_encode = msgspec.json.Encoder().encode


def _row(item: Item) -> Row:
    ev = item.event
    tag, domain, key_field = _META[type(ev)]
    key = None if key_field is None else getattr(ev, key_field)
    return {
        "seq": item.seq,
        "subject": item.subject,
        "type": tag,
        "event_id": ev.event_id,
        "occurred_at": ev.occurred_at,
        "source": ev.source,
        "correlation_id": ev.correlation_id,
        "domain": domain,
        "key": None if key is None else str(key),
        "payload": _encode(ev).decode(),
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
