"""L8: the legacy observation report (a long watch of the legacy hosts).

The report's sections (``observation_summary``, ``alert_summary``, ``stability_assessment``,
``recommendations``) become one ``LegacyObservation`` each (the section as ``metrics``), then
each ``observation_log`` entry one ``LegacyObservation`` whose ``kind`` names the shape of its
metrics: ``gpu``, ``host``, ``integrity``, ``checkpoint`` or ``note`` (empty or other).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from replay.model import BadValue, Record, event_id, reject, to_float, to_text, to_time
from replay.readers.jsonfile import load_json, peek_json
from streams.events.legacy import LegacyObservation

__all__ = ["READER", "metrics_kind"]

SECTIONS = ("observation_summary", "alert_summary", "stability_assessment", "recommendations")
_KINDS = (
    ("gpu", {"temperature_c", "utilization_percent", "power_watts"}),
    ("host", {"load_average", "memory_usage_percent", "disk_usage_percent"}),
    ("integrity", {"file_size_kb", "migration_markers_present", "total_markers_expected"}),
    ("checkpoint", {"checkpoint_hour", "success_rate_percent", "tests_passed", "total_tests"}),
)


def metrics_kind(metrics: dict[str, Any]) -> str:
    keys = set(metrics)
    for kind, names in _KINDS:
        if keys & names:
            return kind
    return "note"


class ObservationReportReader:
    format = "L8"
    name = "observation-report"

    def detect(self, path: Path) -> bool:
        data = peek_json(path)
        return isinstance(data, dict) and "observation_log" in data

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        data = load_json(path)
        source = f"legacy:L8:{path.name}"
        mtime = path.stat().st_mtime
        index = -1
        for section in SECTIONS:
            index += 1
            if index < skip:
                continue
            value = data.get(section)
            if value is None:
                value = {}
            if not isinstance(value, dict):
                value = {"value": value}
            ev = LegacyObservation(
                event_id=event_id("L8", "section", (path.name, section), repr(value)),
                occurred_at=mtime,
                source=source,
                kind=section,
                level="info",
                message=f"{section} of {path.name}",
                metrics=value,
            )
            yield Record(events=(ev,), entity="legacy_observations")
        log = data.get("observation_log") or []
        for i, entry in enumerate(log if isinstance(log, list) else []):
            index += 1
            if index < skip:
                continue
            try:
                yield _entry(source, mtime, path.name, i, entry)
            except BadValue as exc:
                yield reject("L8", path, f"{path.name}:observation_log[{i}]", str(exc), entry)


def _entry(source: str, mtime: float, name: str, i: int, entry: Any) -> Record:
    if not isinstance(entry, dict):
        raise BadValue(f"entry is a {type(entry).__name__}, not an object")
    at = to_time(entry.get("timestamp"), "timestamp")
    metrics = entry.get("metrics")
    if metrics is None:
        metrics = {}
    if not isinstance(metrics, dict):
        raise BadValue(f"metrics is a {type(metrics).__name__}, not an object")
    ev = LegacyObservation(
        event_id=event_id("L8", "log", (name, i), repr(sorted(entry.items(), key=str))),
        occurred_at=at if at is not None else mtime,
        source=source,
        kind=metrics_kind(metrics),
        level=to_text(entry.get("level"), "info").lower(),
        message=to_text(entry.get("message")),
        at=at,
        elapsed_hours=to_float(entry.get("elapsed_hours"), "elapsed_hours"),
        metrics=metrics,
    )
    return Record(events=(ev,), entity="legacy_observations", at=at)


READER = ObservationReportReader()
