"""The ``history`` projection: every event of the log as one row of ``events``."""

from __future__ import annotations

from typing import ClassVar

import duckdb
import msgspec
import pyarrow as pa

from projections.base import Append, Item, Merge, Projection, Row
from streams.base import Event
from streams.catalog import ALL_EVENTS

__all__ = ["HistoryProjection", "history_row"]


# per type: (tag, domain, key field), looked up once per event instead of three attributes
_META = {
    t: (str(t.__struct_config__.tag), t.domain, t.key_field) for t in ALL_EVENTS
}
_encode = msgspec.json.Encoder().encode

# The envelope fields every event carries, read out of the JSON payload in one parse per row.
_ENVELOPE = (
    '{"type": "VARCHAR", "event_id": "VARCHAR", "occurred_at": "DOUBLE", '
    '"source": "VARCHAR", "correlation_id": "VARCHAR"}'
)
_INSERT = f"""
    INSERT INTO <table> BY NAME
    SELECT seq, subject, j.type AS type, j.event_id AS event_id, j.occurred_at AS occurred_at,
           j.source AS source, j.correlation_id AS correlation_id,
           domain, key, payload, seq AS last_seq
    FROM (SELECT *, json_transform(payload, '{_ENVELOPE}') AS j FROM _mvs_events)
"""


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
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = dict.fromkeys(
        ALL_EVENTS, _APPEND
    )

    def fold(self, con: duckdb.DuckDBPyConnection, items: list[Item]) -> list[tuple[Item, str]]:
        """The same rows as the generic engine would append, with the columns found by DuckDB.

        Every event passes through this projection, so Python does the least it can per
        event: it encodes the payload and reads the key; DuckDB takes type, event id, time,
        source and correlation id out of the payload (one ``json_transform`` per row), off
        the GIL.
        """
        n = len(items)
        seq: list[int] = [0] * n
        subject: list[str] = [""] * n
        key: list[str | None] = [None] * n
        domain: list[str] = [""] * n
        payload: list[str] = [""] * n
        for i, item in enumerate(items):
            ev = item.event
            _, domain[i], key_field = _META[type(ev)]
            k = None if key_field is None else getattr(ev, key_field)
            seq[i] = item.seq
            subject[i] = item.subject
            key[i] = None if k is None else str(k)
            payload[i] = _encode(ev).decode()
        batch = pa.table(
            {
                "seq": pa.array(seq, pa.uint64()),
                "subject": pa.array(subject, pa.string()),
                "key": pa.array(key, pa.string()),
                "domain": pa.array(domain, pa.string()),
                "payload": pa.array(payload, pa.string()),
            }
        )
        con.register("_mvs_events", batch)
        try:
            con.execute(_INSERT.replace("<table>", self.t("events")))
        finally:
            con.unregister("_mvs_events")
        return []
