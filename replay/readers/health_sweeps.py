"""L7: legacy health sweeps ``<host>_healthcheck_results_YYYYMMDD_HHMMSS.json``.

One ``LegacyObservation`` (kind ``health_sweep``) per file with the sweep's own summary, then
one ``LegacyHealthChecked`` per result. ``healthy`` is read from the free-text status
(``[OK] Healthy``, a check mark, ``healthy``); timeouts, errors and cross marks are unhealthy.
A summary that disagrees with its results is a finding, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from replay.model import BadValue, Record, event_id, reject, to_int, to_text, to_time
from replay.readers.jsonfile import load_json, peek_json
from streams.events.legacy import LegacyHealthChecked, LegacyObservation

__all__ = ["READER", "status_is_healthy"]

_GOOD = re.compile(r"\b(ok|healthy|up|success)\b|\u2705|\u2714", re.IGNORECASE)
_BAD = re.compile(r"unhealthy|error|timeout|fail|down|\u274c|\u2716", re.IGNORECASE)
_HOST = re.compile(r"^([A-Za-z0-9]+)_healthcheck")


def status_is_healthy(text: str) -> bool:
    return bool(_GOOD.search(text)) and not _BAD.search(text)


class HealthSweepReader:
    format = "L7"
    name = "health-sweep"

    def detect(self, path: Path) -> bool:
        data = peek_json(path)
        return isinstance(data, dict) and isinstance(data.get("results"), list) and (
            "summary" in data or "timestamp" in data
        )

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        data = load_json(path)
        source = f"legacy:L7:{path.name}"
        m = _HOST.match(path.name)
        host = m.group(1) if m else ""
        try:
            sweep_at = to_time(data.get("timestamp"), "timestamp")
        except BadValue as exc:
            yield reject("L7", path, f"{path.name}:timestamp", str(exc), data.get("timestamp"))
            return
        when = sweep_at if sweep_at is not None else path.stat().st_mtime
        results = data.get("results") or []
        summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
        if skip <= 0:
            yield _summary(path, source, when, sweep_at, summary, results)
        for i, result in enumerate(results):
            if i + 1 < skip:
                continue
            try:
                yield _result(source, when, host, i, result)
            except BadValue as exc:
                yield reject("L7", path, f"{path.name}:results[{i}]", str(exc), result)


def _summary(
    path: Path, source: str, when: float, sweep_at: float | None, summary: dict[str, Any],
    results: list[Any],
) -> Record:
    total = summary.get("total_services")
    findings: tuple[str, ...] = ()
    if total is not None and total != len(results):
        findings = ("sweep_summary_disagrees_with_results",)
    ev = LegacyObservation(
        event_id=event_id("L7", "sweep", path.name, (sweep_at, sorted(summary.items()))),
        occurred_at=when,
        source=source,
        kind="health_sweep",
        level="info",
        message=f"health sweep {path.name}: {len(results)} results",
        at=sweep_at,
        metrics=dict(summary),
    )
    return Record(events=(ev,), entity="legacy_observations", at=sweep_at, findings=findings)


def _result(source: str, when: float, host: str, i: int, result: Any) -> Record:
    if not isinstance(result, dict):
        raise BadValue(f"result is a {type(result).__name__}, not an object")
    name = to_text(result.get("Service Name") or result.get("name"))
    if not name:
        raise BadValue("Service Name: missing")
    status = to_text(result.get("Status"))
    port = to_int(result.get("Port"), "Port", 0) or None
    ev = LegacyHealthChecked(
        event_id=event_id("L7", "result", (when, i, name), sorted(result.items())),
        occurred_at=when,
        source=source,
        service=name,
        sweep_at=when,
        status_text=status,
        healthy=status_is_healthy(status),
        port=port,
        response=to_text(result.get("Response")),
        host=host,
    )
    return Record(events=(ev,), entity="legacy_health", at=when)


READER = HealthSweepReader()
