"""The ``legacy`` projection: legacy logs, health sweeps, observations, rejections, replays.

All history tables: one row per event (duplicates beyond the JetStream window dropped by
event id, like every projection).
"""

from __future__ import annotations

from typing import ClassVar

from projections.base import Append, Item, Merge, Projection, Row
from projections.learning import event_row
from streams.base import Event
from streams.events import legacy as lc

__all__ = ["LegacyProjection"]


def _with_time(item: Item) -> Row:
    row = event_row(item, seq=True)
    row["occurred_at"] = item.event.occurred_at
    return row


class LegacyProjection(Projection):
    name = "legacy"
    subjects = ("mvs.evt.legacy.>",)
    schema_file = "legacy.sql"
    tables = (
        "legacy_log", "legacy_health", "legacy_observations", "legacy_rejections",
        "legacy_bridge_calls", "replays",
    )
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = {
        lc.LegacyLogLine: (
            Append("legacy_log", lambda i: event_row(i, time_field="at", seq=True)),
        ),
        lc.LegacyHealthChecked: (Append("legacy_health", lambda i: event_row(i, seq=True)),),
        lc.LegacyObservation: (
            Append(
                "legacy_observations",
                lambda i: event_row(i, json=("metrics",), time_field="at", seq=True),
            ),
        ),
        lc.LegacyRecordRejected: (
            Append("legacy_rejections", lambda i: event_row(i, seq=True)),
        ),
        lc.LegacyBridgeCall: (Append("legacy_bridge_calls", _with_time),),
        lc.ReplayCompleted: (
            Append("replays", lambda i: _with_time_json(i)),
        ),
    }


def _with_time_json(item: Item) -> Row:
    row = event_row(item, json=("summary",), seq=True)
    row["occurred_at"] = item.event.occurred_at
    return row
