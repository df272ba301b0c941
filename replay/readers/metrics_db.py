"""L3: observability metrics ``performance_metrics_<mainpc|pc2>.db`` (SQLite).

The host comes from the file name (``performance_metrics_pc2.db``), else the row's
``environment``; ``metadata``, ``environment`` and ``hub_role`` are kept in the context.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from replay.model import Record, to_text, to_time
from replay.readers.learning_db import json_object, record, required_float, row_key
from replay.readers.sqlite_base import Ctx, SqliteReader, TableMap
from streams.events.language import MetricRecorded

__all__ = ["L3_READER"]


def _observability_metric(ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    at = to_time(row.get("timestamp"), "timestamp")
    env = to_text(row.get("environment"))
    return record(
        ctx, "perf_metric", row_key(row, "id", rowid), row, "metrics", at, MetricRecorded,
        agent=to_text(row.get("agent_name")),
        metric_name=to_text(row.get("metric_type")),
        value=required_float(row.get("metric_value"), "metric_value"),
        at=at,
        host=ctx.host or env,
        context={
            "metadata": json_object(row.get("metadata")),
            "environment": env,
            "hub_role": to_text(row.get("hub_role")),
        },
    )


_HOST = re.compile(r"performance_metrics_([A-Za-z0-9]+)")


class _MetricsReader(SqliteReader):
    def host_of(self, path: Path) -> str:
        m = _HOST.search(path.name)
        return m.group(1) if m else ""


L3_READER = _MetricsReader(
    "L3",
    "metrics-db",
    (
        TableMap(
            "performance_metrics", ("metric_type", "metric_value"),
            ("id", "timestamp", "agent_name", "metric_type", "metric_value", "metadata",
             "environment", "hub_role"),
            "metrics", _observability_metric,
        ),
    ),
)
