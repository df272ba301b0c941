"""The ``history`` projection: every event of the log as one row of ``events``."""

from __future__ import annotations

from typing import ClassVar

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from projections.base import (
    Append,
    Item,
    ItemsAt,
    Merge,
    Projection,
    Row,
    insert_arrow,
    items_by_seq,
)
from streams.base import Event
from streams.catalog import ALL_EVENTS

__all__ = ["HistoryProjection", "history_row"]


# per type: (tag, domain, key field), looked up once per event instead of three attributes
_META = {
    t: (str(t.__struct_config__.tag), t.domain, t.key_field) for t in ALL_EVENTS
}
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode


def _json_column(events: list[Event]) -> pa.Array:
    """The events' JSON as one Arrow string column, encoded end to end into one buffer:
    no bytes object per event and no UTF-8 check of them (msgspec writes valid UTF-8).
    Measured on 20k events: 0.75 -> 0.43 us per event."""
    data = bytearray()
    ends = [0]
    encode_into = _encoder.encode_into
    end = ends.append
    for ev in events:
        encode_into(ev, data, -1)
        end(len(data))
    if len(data) >= 1 << 31:  # beyond 32-bit offsets (never at a batch's size)
        return pa.array([_encode(ev) for ev in events], pa.binary()).cast(pa.string())
    offsets = pa.py_buffer(np.array(ends, dtype=np.int32))
    return pa.StringArray.from_buffers(len(events), offsets, pa.py_buffer(data))

_SCHEMA = pa.schema([
    ("seq", pa.uint64()), ("subject", pa.string()), ("type", pa.string()),
    ("event_id", pa.string()), ("occurred_at", pa.float64()), ("source", pa.string()),
    ("correlation_id", pa.string()), ("domain", pa.string()), ("key", pa.string()),
    ("payload", pa.string()), ("last_seq", pa.uint64()),
])


def history_row(item: Item) -> Row:
    """One event's row, field by field: the definition :meth:`HistoryProjection.fold` meets."""
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


_APPEND: tuple[Append | Merge, ...] = (Append("events", history_row),)


class HistoryProjection(Projection):
    name = "history"
    subjects = ("mvs.evt.>",)
    schema_file = "history.sql"
    tables = ("events",)
    # The history mirrors the log, including an event published twice: no dedup.
    dedup = False
    prepares = True
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = dict.fromkeys(
        ALL_EVENTS, _APPEND
    )

    def prepare(self, items: list[Item]) -> dict[str, pa.Table]:
        """The rows :func:`history_row` defines, column by column (a comprehension per
        column: every event passes through here, usually in the intake process)."""
        events = [item.event for item in items]
        metas = [_META[type(ev)] for ev in events]
        keys = [
            None if m[2] is None else getattr(ev, m[2])
            for ev, m in zip(events, metas, strict=True)
        ]
        seqs = pa.array([item.seq for item in items], pa.uint64())
        columns = [
            seqs,
            pa.array([item.subject for item in items], pa.string()),
            pa.array([m[0] for m in metas], pa.string()),
            pa.array([ev.event_id for ev in events], pa.string()),
            pa.array([ev.occurred_at for ev in events], pa.float64()),
            pa.array([ev.source for ev in events], pa.string()),
            pa.array([ev.correlation_id for ev in events], pa.string()),
            pa.array([m[1] for m in metas], pa.string()),
            pa.array([None if k is None else str(k) for k in keys], pa.string()),
            _json_column(events),
            seqs,
        ]
        return {"events": pa.Table.from_arrays(columns, schema=_SCHEMA)}

    def fold(self, con: duckdb.DuckDBPyConnection, items: list[Item]) -> list[tuple[Item, str]]:
        return self.fold_prepared(con, self.prepare(items), items_by_seq(items))

    def fold_prepared(
        self, con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], items_at: ItemsAt
    ) -> list[tuple[Item, str]]:
        insert_arrow(con, self.t("events"), tables["events"])
        return []
