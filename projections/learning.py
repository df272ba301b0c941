"""The ``learning`` projection: translation cache, learning loop, metrics, emotion state.

Keyed tables are last-write-wins per key (a re-recorded translation or training cycle
replaces the row); parameters and metrics are history tables.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from projections.base import Append, FoldContext, Item, Merge, Projection, Row, dumps
from streams.base import Event
from streams.events import language as lg

__all__ = ["LearningProjection", "event_row"]


def event_row(
    item: Item, *, json: tuple[str, ...] = (), time_field: str | None = None, seq: bool = False
) -> Row:
    """The event's own fields as a row: JSON-ish fields as JSON text, the event's time field
    (falling back to ``occurred_at``) as ``occurred_at``, and optionally the stream ``seq``."""
    ev: Any = item.event
    row = msgspec.structs.asdict(ev)
    for name in json:
        row[name] = dumps(row[name])
    if time_field is not None:
        value = row.pop(time_field)
        row["occurred_at"] = value if value is not None else ev.occurred_at
    if seq:
        row["seq"] = item.seq
    return row


def _lww(key_field: str, **kw: Any) -> Merge:
    def apply(old: Row | None, item: Item, ctx: FoldContext) -> Row:
        return event_row(item, **kw)

    return Merge(key_field, lambda i: (getattr(i.event, _KEYS[key_field]),), apply)


_KEYS = {
    "translations": "cache_key",
    "learning_opportunities": "opportunity_id",
    "training_cycles": "cycle_id",
    "model_evaluations": "evaluation_id",
    "emotion_states": "session_id",
}


def _translation(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    row = event_row(item)
    if row["translated_at"] is None:
        row["translated_at"] = item.event.occurred_at
    return row


def _emotion(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    row = event_row(item, json=("cues",))
    row["occurred_at"] = item.event.occurred_at
    return row


class LearningProjection(Projection):
    name = "learning"
    subjects = (
        "mvs.evt.translation.>", "mvs.evt.learning.>", "mvs.evt.metric.>", "mvs.evt.emotion.>",
    )
    schema_file = "learning.sql"
    tables = (
        "translations", "learning_opportunities", "training_cycles", "parameter_history",
        "metrics", "model_evaluations", "emotion_states",
    )
    keys: ClassVar[dict[str, tuple[str, ...]]] = {t: (k,) for t, k in _KEYS.items()}
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = {
        lg.TranslationRecorded: (
            Merge("translations", lambda i: (i.event.cache_key,), _translation),  # type: ignore[attr-defined]
        ),
        lg.LearningOpportunityDetected: (
            _lww("learning_opportunities", json=("interaction_data",)),
        ),
        lg.TrainingCycleRecorded: (
            _lww(
                "training_cycles",
                json=("opportunities", "resource_allocation", "hyperparameters"),
            ),
        ),
        lg.ModelEvaluated: (_lww("model_evaluations", json=("comparison",)),),
        lg.EmotionStateUpdated: (
            Merge("emotion_states", lambda i: (i.event.session_id,), _emotion),  # type: ignore[attr-defined]
        ),
        lg.ParameterAdjusted: (
            Append(
                "parameter_history",
                lambda i: event_row(i, json=("metadata",), time_field="at", seq=True),
            ),
        ),
        lg.MetricRecorded: (
            Append(
                "metrics", lambda i: event_row(i, json=("context",), time_field="at", seq=True)
            ),
        ),
    }
