"""L6: the legacy service registry ``service_registry.json``.

Each entry becomes a ``ServiceRegistered`` (endpoint ``protocol://host:port``) and a
``ServiceHealth`` with the entry's ``is_healthy`` at its ``last_health_check`` time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from replay.model import BadValue, Record, event_id, reject, to_int, to_text, to_time
from replay.readers.jsonfile import load_json, peek_json
from streams.events.system import HealthStatus, ServiceHealth, ServiceRegistered

__all__ = ["READER"]


def _looks_like_registry(data: Any) -> bool:
    if not isinstance(data, dict) or not data:
        return False
    for entries in data.values():
        if not isinstance(entries, list):
            return False
        for e in entries:
            if not isinstance(e, dict) or "port" not in e:
                return False
    return True


class ServiceRegistryReader:
    format = "L6"
    name = "service-registry"

    def detect(self, path: Path) -> bool:
        return _looks_like_registry(peek_json(path))

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        data = load_json(path)
        source = f"legacy:L6:{path.name}"
        mtime = path.stat().st_mtime
        index = -1
        for name, entries in data.items():
            for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
                index += 1
                if index < skip:
                    continue
                try:
                    yield _entry(source, mtime, name, i, entry)
                except BadValue as exc:
                    yield reject("L6", path, f"{path.name}:{name}[{i}]", str(exc), entry)


def _entry(source: str, mtime: float, name: str, i: int, entry: Any) -> Record:
    if not isinstance(entry, dict):
        raise BadValue(f"entry is a {type(entry).__name__}, not an object")
    service = to_text(entry.get("name")) or name
    host = to_text(entry.get("host"), "localhost")
    port = to_int(entry.get("port"), "port", 0) or None
    health_port = to_int(entry.get("health_port"), "health_port", 0) or None
    protocol = to_text(entry.get("protocol"), "tcp")
    at = to_time(entry.get("last_health_check"), "last_health_check")
    when = at if at is not None else mtime
    instance = f"legacy-{service}-{i}"
    raw = tuple(sorted((k, repr(v)) for k, v in entry.items()))
    healthy = entry.get("is_healthy")
    status: HealthStatus = (
        "healthy" if healthy is True else "unhealthy" if healthy is False else "unknown"
    )
    events = (
        ServiceRegistered(
            event_id=event_id("L6", "registered", (name, i), raw),
            occurred_at=when,
            source=source,
            service=service,
            host=host,
            instance_id=instance,
            endpoint=f"{protocol}://{host}:{port}" if port else "",
            version=f"legacy mesh={to_text(entry.get('mesh_type'))}",
            port=port,
            health_port=health_port,
            protocol=protocol,
        ),
        ServiceHealth(
            event_id=event_id("L6", "health", (name, i), raw),
            occurred_at=when,
            source=source,
            service=service,
            status=status,
            host=host,
            instance_id=instance,
            detail="legacy registry is_healthy",
        ),
    )
    return Record(events=events, entity="services", at=at)


READER = ServiceRegistryReader()
