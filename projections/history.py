"""The ``history`` projection: every event of the log as one row of ``events``."""

from __future__ import annotations

from typing import Any, ClassVar

import duckdb
import msgspec
import pyarrow as pa

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

    def fold(self, con: duckdb.DuckDBPyConnection, items: list[Item]) -> list[tuple[Item, str]]:
        """The same rows as the generic engine would append, built column by column.

        Every event passes through this projection, so it skips the per-row dicts.
        """
        n = len(items)
        cols: list[list[Any]] = [[None] * n for _ in range(10)]
        seq, subject, tag, eid, occurred, source, corr, domain, key, payload = cols
        for i, item in enumerate(items):
            ev = item.event
            t, d, key_field = _META[type(ev)]
            k = None if key_field is None else getattr(ev, key_field)
            seq[i] = item.seq
            subject[i] = item.subject
            tag[i] = t
            eid[i] = ev.event_id
            occurred[i] = ev.occurred_at
            source[i] = ev.source
            corr[i] = ev.correlation_id
            domain[i] = d
            key[i] = None if k is None else str(k)
            payload[i] = _encode(ev).decode()
        columns = {
            "seq": pa.array(seq, pa.uint64()),
            "subject": pa.array(subject, pa.string()),
            "type": pa.array(tag, pa.string()),
            "event_id": pa.array(eid, pa.string()),
            "occurred_at": pa.array(occurred, pa.float64()),
            "source": pa.array(source, pa.string()),
            "correlation_id": pa.array(corr, pa.string()),
            "domain": pa.array(domain, pa.string()),
            "key": pa.array(key, pa.string()),
            "payload": pa.array(payload, pa.string()),
            "last_seq": pa.array(seq, pa.uint64()),
        }
        con.register("_mvs_events", pa.table(columns))
        try:
            con.execute(f"INSERT INTO {self.t('events')} BY NAME SELECT * FROM _mvs_events")
        finally:
            con.unregister("_mvs_events")
        return []
