"""What verification compares: for each replayed event type, the projection row it must give.

Each :class:`Spec` names the verification entity, the projection table, its key (``None`` for
append-only tables, which are matched by ``event_id`` through the ``events`` history table),
the compared columns, and the expected row. The rules mirror the projection contract
(/notes/SCHEMA.md): JSON-ish fields are compared as sorted-key JSON text, and a legacy time
that was NULL shows as the event's ``occurred_at`` (a finding, reported separately).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from streams.base import Event
from streams.events import language as lg
from streams.events import legacy as lc
from streams.events import memory as m
from streams.events import system as sy

__all__ = ["SPECS", "SPEC_BY_ENTITY", "Spec", "dumps"]


def dumps(value: Any) -> str:
    """JSON text with sorted keys: equal values give equal text (as the projections write)."""
    return msgspec.json.encode(value, order="sorted").decode()


def _t(value: float | None, ev: Event) -> float:
    return value if value is not None else ev.occurred_at


@dataclass(frozen=True)
class Spec:
    entity: str
    table: str
    key: tuple[str, ...] | None
    columns: tuple[str, ...]
    row: Callable[[Any], dict[str, Any]]

    @property
    def key_columns(self) -> tuple[str, ...]:
        return self.key if self.key is not None else ("event_id",)


def _memory(ev: m.MemoryWritten) -> dict[str, Any]:
    return {
        "memory_id": ev.memory_id, "content": ev.content, "memory_type": ev.memory_type,
        "tier": ev.tier, "importance": ev.importance, "access_count": ev.access_count,
        "created_at": _t(ev.created_at, ev), "last_accessed_at": ev.last_accessed_at,
        "expires_at": ev.expires_at, "metadata": dumps(ev.metadata),
        "metadata_raw": ev.metadata_raw, "tags": dumps(ev.tags), "parent_id": ev.parent_id,
        "session_id": ev.session_id,
    }


def _fields(*names: str, json: tuple[str, ...] = (), times: dict[str, str] | None = None,
            ) -> Callable[[Any], dict[str, Any]]:
    """A row of the event's own fields; ``times`` maps a column to a time field that falls
    back to ``occurred_at``."""

    def row(ev: Any) -> dict[str, Any]:
        out = {n: getattr(ev, n) for n in names}
        for n in json:
            out[n] = dumps(out[n])
        for col, field in (times or {}).items():
            out[col] = _t(getattr(ev, field), ev)
        return out

    return row


SPECS: dict[type[Event], Spec] = {
    m.MemoryWritten: Spec(
        "memories", "memories", ("memory_id",),
        ("content", "memory_type", "tier", "importance", "access_count", "created_at",
         "last_accessed_at", "expires_at", "metadata", "metadata_raw", "tags", "parent_id",
         "session_id"),
        _memory,
    ),
    m.RelationshipAdded: Spec(
        "memory_relationships", "memory_relationships",
        ("source_memory_id", "target_memory_id", "relationship_type"),
        ("strength", "relationship_id", "created_at"),
        _fields("source_memory_id", "target_memory_id", "relationship_type", "strength",
                "relationship_id", times={"created_at": "created_at"}),
    ),
    m.ContextGroupCreated: Spec(
        "context_groups", "context_groups", ("group_id",), ("name", "description", "created_at"),
        _fields("group_id", "name", "description", times={"created_at": "created_at"}),
    ),
    m.MemoryGrouped: Spec(
        "context_group_members", "context_group_members", ("group_id", "memory_id"), (),
        _fields("group_id", "memory_id"),
    ),
    m.SessionStarted: Spec(
        "sessions", "sessions", ("session_id",), ("started_at", "summary"),
        _fields("session_id", "summary", times={"started_at": "started_at"}),
    ),
    lg.TranslationRecorded: Spec(
        "translations", "translations", ("cache_key",),
        ("text", "source_lang", "target_lang", "translation", "engine", "translated_at"),
        _fields("cache_key", "text", "source_lang", "target_lang", "translation", "engine",
                times={"translated_at": "translated_at"}),
    ),
    lg.LearningOpportunityDetected: Spec(
        "learning_opportunities", "learning_opportunities", ("opportunity_id",),
        ("source_agent", "opportunity_type", "priority_score", "status", "created_at",
         "interaction_data"),
        _fields("opportunity_id", "source_agent", "opportunity_type", "priority_score",
                "status", "created_at", "interaction_data", json=("interaction_data",)),
    ),
    lg.TrainingCycleRecorded: Spec(
        "training_cycles", "training_cycles", ("cycle_id",),
        ("model_name", "status", "start_time", "end_time", "opportunities",
         "resource_allocation", "hyperparameters", "training_logs"),
        _fields("cycle_id", "model_name", "status", "start_time", "end_time", "opportunities",
                "resource_allocation", "hyperparameters", "training_logs",
                json=("opportunities", "resource_allocation", "hyperparameters")),
    ),
    lg.ModelEvaluated: Spec(
        "model_evaluations", "model_evaluations", ("evaluation_id",),
        ("model_name", "cycle_id", "trust_score", "accuracy", "f1_score", "avg_latency_ms",
         "evaluated_at", "comparison"),
        _fields("evaluation_id", "model_name", "cycle_id", "trust_score", "accuracy",
                "f1_score", "avg_latency_ms", "evaluated_at", "comparison",
                json=("comparison",)),
    ),
    lg.ParameterAdjusted: Spec(
        "parameter_history", "parameter_history", None,
        ("name", "value", "performance_metric", "occurred_at", "metadata"),
        _fields("name", "value", "performance_metric", "metadata", json=("metadata",),
                times={"occurred_at": "at"}),
    ),
    lg.MetricRecorded: Spec(
        "metrics", "metrics", None,
        ("agent", "metric_name", "value", "occurred_at", "host", "context"),
        _fields("agent", "metric_name", "value", "host", "context", json=("context",),
                times={"occurred_at": "at"}),
    ),
    lc.LegacyLogLine: Spec(
        "legacy_log", "legacy_log", None,
        ("agent", "level", "message", "occurred_at", "source_file", "line_no"),
        _fields("agent", "level", "message", "source_file", "line_no",
                times={"occurred_at": "at"}),
    ),
    lc.LegacyHealthChecked: Spec(
        "legacy_health", "legacy_health", None,
        ("service", "sweep_at", "status_text", "healthy", "port", "response", "host"),
        _fields("service", "sweep_at", "status_text", "healthy", "port", "response", "host"),
    ),
    lc.LegacyObservation: Spec(
        "legacy_observations", "legacy_observations", None,
        ("kind", "level", "message", "occurred_at", "elapsed_hours", "metrics"),
        _fields("kind", "level", "message", "elapsed_hours", "metrics", json=("metrics",),
                times={"occurred_at": "at"}),
    ),
    lc.LegacyRecordRejected: Spec(
        "legacy_rejections", "legacy_rejections", None,
        ("source_format", "source_path", "location", "reason", "raw"),
        _fields("source_format", "source_path", "location", "reason", "raw"),
    ),
    sy.ServiceRegistered: Spec(
        "services", "services", ("service",), ("host", "endpoint", "port", "version"),
        _fields("service", "host", "endpoint", "port", "version"),
    ),
    sy.ServiceHealth: Spec(
        "service_status", "services", ("service",), ("status",),
        _fields("service", "status"),
    ),
}


SPEC_BY_ENTITY: dict[str, Spec] = {spec.entity: spec for spec in SPECS.values()}
if len(SPEC_BY_ENTITY) != len(SPECS):  # pragma: no cover - a programming error
    raise RuntimeError("two event types verify the same entity")
