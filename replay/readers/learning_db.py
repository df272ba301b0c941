"""L2: the learning databases, SQLite history of the learning loop.

L2 spans four legacy files (``learning_opportunities.db``, ``training_cycles.db``,
``learning_adjuster.db``, ``model_evaluation.db``); a file is recognised by its tables, not its
name. Two of them hold a ``performance_metrics`` table with different columns (and L3, in
:mod:`replay.readers.metrics_db`, a third variant): the column signature decides. JSON
columns that are not a JSON object are kept under ``{"value": ...}`` (valid JSON of another
shape) or ``{"_raw": text}`` (invalid JSON).
"""

from __future__ import annotations

from typing import Any

from replay.model import BadValue, Record, event_id, parse_json, to_float, to_text, to_time
from replay.readers.sqlite_base import Ctx, SqliteReader, TableMap
from streams.events.language import (
    LearningOpportunityDetected,
    MetricRecorded,
    ModelEvaluated,
    ParameterAdjusted,
    TrainingCycleRecorded,
)

__all__ = ["L2_READER", "json_object", "record", "required_float", "row_key"]


def json_object(value: Any) -> dict[str, Any]:
    parsed, ok = parse_json(value)
    if not ok:
        return {"_raw": to_text(value)}
    if parsed is None:
        return {}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def required_float(value: Any, name: str) -> float:
    f = to_float(value, name)
    if f is None:
        raise BadValue(f"{name}: NULL")
    return f


def row_key(row: dict[str, Any], name: str, rowid: int) -> str:
    value = row.get(name)
    return str(rowid) if value is None else to_text(value)


def record(ctx: Ctx, kind: str, key: str, row: dict[str, Any], entity: str,
         when: float | None, ev_type: type, **fields: Any) -> Record:
    ev = ev_type(
        event_id=event_id(ctx.fmt, kind, key, tuple(row.values())),
        occurred_at=when if when is not None else ctx.mtime,
        source=ctx.source,
        **fields,
    )
    return Record(events=(ev,), entity=entity, at=when)


def _opportunity(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    key = row_key(row, "id", rowid)
    at = to_time(row.get("created_at"), "created_at")
    return record(
        ctx, "opportunity", key, row, "learning_opportunities", at, LearningOpportunityDetected,
        opportunity_id=key,
        source_agent=to_text(row.get("source_agent")),
        opportunity_type=to_text(row.get("opportunity_type")),
        priority_score=to_float(row.get("priority_score"), "priority_score", 0.0),
        status=to_text(row.get("status"), "pending"),
        created_at=at,
        interaction_data=json_object(row.get("interaction_data")),
    )


def _opportunity_ids(value: Any) -> list[str]:
    parsed, ok = parse_json(value)
    if not ok:
        raise BadValue(f"learning_opportunities: invalid JSON {to_text(value)[:80]!r}")
    if parsed is None:
        return []
    if isinstance(parsed, list):
        return [to_text(p) for p in parsed]
    return [to_text(parsed)]


def _cycle(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    key = row_key(row, "id", rowid)
    start = to_time(row.get("start_time"), "start_time")
    return record(
        ctx, "cycle", key, row, "training_cycles", start, TrainingCycleRecorded,
        cycle_id=key,
        model_name=to_text(row.get("model_name")),
        status=to_text(row.get("status")),
        start_time=start,
        end_time=to_time(row.get("end_time"), "end_time"),
        opportunities=_opportunity_ids(row.get("learning_opportunities")),
        resource_allocation=json_object(row.get("resource_allocation")),
        hyperparameters=json_object(row.get("hyperparameters")),
        training_logs=to_text(row.get("training_logs")),
    )


def _allocation(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    at = to_time(row.get("timestamp"), "timestamp")
    cycle = to_text(row.get("cycle_id"))
    return record(
        ctx, "allocation", row_key(row, "id", rowid), row, "metrics", at, MetricRecorded,
        agent=f"training_cycle:{cycle}",
        metric_name=f"resource_allocation.{to_text(row.get('resource_type'))}",
        value=required_float(row.get("amount"), "amount"),
        at=at,
        context={"table": "resource_allocation", "id": row.get("id"), "cycle_id": cycle},
    )


def _parameter(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    at = to_time(row.get("timestamp"), "timestamp")
    name = to_text(row.get("parameter_name"))
    if not name:
        raise BadValue("parameter_name: missing")
    return record(
        ctx, "parameter", row_key(row, "id", rowid), row, "parameter_history", at,
        ParameterAdjusted,
        name=name,
        value=required_float(row.get("value"), "value"),
        performance_metric=to_float(row.get("performance_metric"), "performance_metric"),
        at=at,
        metadata=json_object(row.get("metadata")),
    )


def _parameter_config(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    name = to_text(row.get("name"))
    if not name:
        raise BadValue("name: missing")
    meta = {k: row.get(k) for k in ("type", "min_value", "max_value", "step_size", "description")}
    meta["metadata"] = json_object(row.get("metadata"))
    meta["table"] = "parameter_configs"
    return record(
        ctx, "parameter_config", name, row, "parameter_history", None, ParameterAdjusted,
        name=name,
        value=required_float(row.get("current_value"), "current_value"),
        metadata=meta,
    )


def _adjuster_metric(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    at = to_time(row.get("timestamp"), "timestamp")
    ctx_fields = {
        "parameters": json_object(row.get("parameters")),
        "metadata": json_object(row.get("metadata")),
    }
    return record(
        ctx, "adjuster_metric", row_key(row, "id", rowid), row, "metrics", at, MetricRecorded,
        agent="LearningAdjusterAgent",
        metric_name=to_text(row.get("metric_name")),
        value=required_float(row.get("value"), "value"),
        at=at,
        context=ctx_fields,
    )


def _evaluation_metric(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    at = to_time(row.get("timestamp"), "timestamp")
    return record(
        ctx, "evaluation_metric", row_key(row, "metric_id", rowid), row, "metrics", at,
        MetricRecorded,
        agent=to_text(row.get("agent_name")),
        metric_name=to_text(row.get("metric_name")),
        value=required_float(row.get("value"), "value"),
        at=at,
        context=json_object(row.get("context")),
    )


def _evaluation(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    key = row_key(row, "evaluation_id", rowid)
    at = to_time(row.get("evaluation_timestamp"), "evaluation_timestamp")
    cycle = row.get("cycle_id")
    return record(
        ctx, "evaluation", key, row, "model_evaluations", at, ModelEvaluated,
        evaluation_id=key,
        model_name=to_text(row.get("model_name")),
        cycle_id=None if cycle is None else to_text(cycle),
        trust_score=to_float(row.get("trust_score"), "trust_score"),
        accuracy=to_float(row.get("accuracy"), "accuracy"),
        f1_score=to_float(row.get("f1_score"), "f1_score"),
        avg_latency_ms=to_float(row.get("avg_latency_ms"), "avg_latency_ms"),
        evaluated_at=at,
        comparison=json_object(row.get("comparison_data")),
    )


L2_READER = SqliteReader(
    "L2",
    "learning-db",
    (
        TableMap(
            "learning_opportunities", ("opportunity_type",),
            ("id", "source_agent", "opportunity_type", "priority_score", "status", "created_at",
             "interaction_data"),
            "learning_opportunities", _opportunity,
        ),
        TableMap(
            "training_cycles", ("model_name",),
            ("id", "model_name", "learning_opportunities", "status", "start_time", "end_time",
             "resource_allocation", "hyperparameters", "training_logs"),
            "training_cycles", _cycle,
        ),
        TableMap(
            "resource_allocation", ("cycle_id", "resource_type"),
            ("id", "cycle_id", "resource_type", "amount", "timestamp"),
            "metrics", _allocation,
        ),
        TableMap(
            "parameter_history", ("parameter_name",),
            ("id", "parameter_name", "value", "timestamp", "performance_metric", "metadata"),
            "parameter_history", _parameter,
        ),
        TableMap(
            "parameter_configs", ("name", "current_value"),
            ("name", "type", "min_value", "max_value", "current_value", "step_size",
             "description", "metadata"),
            "parameter_history", _parameter_config,
        ),
        TableMap(
            "performance_metrics", ("metric_name", "parameters"),
            ("id", "metric_name", "value", "timestamp", "parameters", "metadata"),
            "metrics", _adjuster_metric,
        ),
        TableMap(
            "performance_metrics", ("metric_id", "agent_name"),
            ("metric_id", "agent_name", "metric_name", "value", "timestamp", "context"),
            "metrics", _evaluation_metric,
        ),
        TableMap(
            "model_evaluation_scores", ("evaluation_id",),
            ("evaluation_id", "model_name", "cycle_id", "trust_score", "accuracy", "f1_score",
             "avg_latency_ms", "evaluation_timestamp", "comparison_data"),
            "model_evaluations", _evaluation,
        ),
    ),
)
