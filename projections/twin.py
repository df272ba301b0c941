"""The ``twin`` projection: the digital twin of services, hosts, models, flags and breakers.

Current-state tables (``services``, ``hosts``, ``models``, ``flags``, ``breakers``,
``alerts``) are folded last-write-wins per key; every event also lands in its history table.
An event about a service or model never registered creates the row (legacy services report
health without registering), so nothing here is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

from projections.base import Append, FoldContext, Item, Key, Merge, Projection, Row, dumps
from streams.base import Event
from streams.events import models as md
from streams.events import system as sy

__all__ = ["TwinProjection"]

_SERVICE_DEFAULTS: Row = {
    "host": "", "instance_id": "", "endpoint": "", "version": "", "pid": None, "port": None,
    "status": "unknown", "registered_at": None, "health_detail": "", "crashes": 0,
    "restarts": 0,
}


def _svc_key(item: Item) -> Key:
    return (item.event.service,)  # type: ignore[attr-defined]


def _service(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: Any = item.event
    row = dict(old) if old is not None else {"service": ev.service, **_SERVICE_DEFAULTS}
    row["last_seen_at"] = ev.occurred_at
    if getattr(ev, "host", ""):
        row["host"] = ev.host
    if isinstance(ev, sy.ServiceRegistered):
        row.update(
            instance_id=ev.instance_id, endpoint=ev.endpoint, version=ev.version, pid=ev.pid,
            port=ev.port, status="registered", registered_at=ev.occurred_at,
        )
    elif isinstance(ev, sy.ServiceDeregistered):
        row["status"] = "deregistered"
    elif isinstance(ev, sy.ServiceHealth):
        row["status"] = ev.status
        row["health_detail"] = ev.detail
        if ev.instance_id:
            row["instance_id"] = ev.instance_id
    elif isinstance(ev, sy.ServiceCrashed):
        row["status"] = "crashed"
        row["crashes"] += 1
    elif isinstance(ev, sy.ServiceRestarted):
        row["status"] = "restarting"
        row["restarts"] += 1
    return row


def _health(item: Item) -> Row:
    ev: sy.ServiceHealth = item.event  # type: ignore[assignment]
    return {
        "service": ev.service, "status": ev.status, "detail": ev.detail, "host": ev.host,
        "latency_ms": ev.latency_ms, "occurred_at": ev.occurred_at, "seq": item.seq,
    }


def _lifecycle(kind: str) -> Append:
    def row(item: Item) -> Row:
        ev: Any = item.event
        detail = getattr(ev, "reason", "") or getattr(ev, "endpoint", "")
        if isinstance(ev, sy.ServiceRestarted):
            detail = f"attempt {ev.attempt}"
        return {
            "service": ev.service, "kind": kind, "occurred_at": ev.occurred_at,
            "detail": detail, "host": getattr(ev, "host", ""), "seq": item.seq,
        }

    return Append("service_lifecycle", row)


def _host(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: sy.HostSampled = item.event  # type: ignore[assignment]
    return {
        "host": ev.host, "sampled_at": ev.occurred_at, "cpu_percent": ev.cpu_percent,
        "memory_used_mb": ev.memory_used_mb, "memory_total_mb": ev.memory_total_mb,
        "load_average": ev.load_average, "disk_used_percent": ev.disk_used_percent,
    }


def _sample(item: Item) -> Row:
    ev: sy.HostSampled = item.event  # type: ignore[assignment]
    return {
        "host": ev.host, "occurred_at": ev.occurred_at, "cpu_percent": ev.cpu_percent,
        "memory_used_mb": ev.memory_used_mb, "memory_total_mb": ev.memory_total_mb,
        "load_average": ev.load_average, "disk_used_percent": ev.disk_used_percent,
        "gpu": dumps(ev.gpu), "seq": item.seq,
    }


def _model(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: Any = item.event
    row = dict(old) if old is not None else {
        "model_id": ev.model_id, "kind": "", "backend": "", "host": ev.host, "loaded": False,
        "memory_mb": 0.0, "loaded_at": None, "unloaded_at": None, "load_ms": None,
        "last_error": None,
    }
    row["host"] = ev.host
    if isinstance(ev, md.ModelLoaded):
        row.update(
            kind=ev.kind, backend=ev.backend, loaded=True, memory_mb=ev.memory_mb,
            loaded_at=ev.occurred_at, unloaded_at=None, load_ms=ev.load_ms,
        )
    elif isinstance(ev, md.ModelLoadFailed):
        row.update(loaded=False, last_error=ev.error)
    else:  # unloaded or evicted
        row.update(loaded=False, unloaded_at=ev.occurred_at)
    return row


_MODEL_KIND: dict[type[Event], str] = {
    md.ModelLoaded: "loaded", md.ModelUnloaded: "unloaded", md.ModelEvicted: "evicted",
    md.ModelLoadFailed: "load_failed",
}


def _model_event(item: Item) -> Row:
    ev: Any = item.event
    memory: float | None
    reason: str
    if isinstance(ev, md.ModelUnloaded):
        memory, reason = ev.memory_freed_mb, str(ev.reason)
    elif isinstance(ev, md.ModelEvicted):
        memory, reason = ev.memory_mb, f"to make room for {ev.to_make_room_for}"
    elif isinstance(ev, md.ModelLoadFailed):
        memory, reason = None, ev.error
    else:
        memory, reason = ev.memory_mb, ""
    return {
        "seq": item.seq, "model_id": ev.model_id, "kind": _MODEL_KIND[type(ev)],
        "occurred_at": ev.occurred_at, "memory_mb": memory, "reason": reason, "host": ev.host,
    }


def _flag(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: sy.FeatureFlagSet = item.event  # type: ignore[assignment]
    return {"name": ev.name, "fraction": ev.fraction, "updated_at": ev.occurred_at,
            "actor": ev.actor}


def _flag_history(item: Item) -> Row:
    ev: sy.FeatureFlagSet = item.event  # type: ignore[assignment]
    return {"name": ev.name, "fraction": ev.fraction, "previous": ev.previous, "actor": ev.actor,
            "occurred_at": ev.occurred_at, "seq": item.seq}


def _breaker(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: sy.BreakerStateChanged = item.event  # type: ignore[assignment]
    return {"service": ev.service, "dependency": ev.dependency, "state": ev.to_state,
            "failures": ev.failures, "updated_at": ev.occurred_at}


def _breaker_history(item: Item) -> Row:
    ev: sy.BreakerStateChanged = item.event  # type: ignore[assignment]
    return {"service": ev.service, "dependency": ev.dependency, "from_state": ev.from_state,
            "to_state": ev.to_state, "failures": ev.failures, "reason": ev.reason,
            "occurred_at": ev.occurred_at, "seq": item.seq}


def _alert(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: Any = item.event
    if isinstance(ev, sy.AlertRaised):
        return {"alert_id": ev.alert_id, "severity": ev.severity, "message": ev.message,
                "service": ev.service, "metrics": dumps(ev.metrics), "raised_at": ev.occurred_at,
                "cleared_at": None, "active": True}
    row = dict(old) if old is not None else {
        "alert_id": ev.alert_id, "severity": "info", "message": "", "service": "",
        "metrics": "{}", "raised_at": None,
    }
    row.update(cleared_at=ev.occurred_at, active=False)
    if ev.message:
        row["message"] = ev.message
    return row


_SVC = Merge("services", _svc_key, _service)
_MODEL = Merge("models", lambda i: (i.event.model_id,), _model)  # type: ignore[attr-defined]
_MODEL_EVENT = Append("model_events", _model_event)
_ALERT = Merge("alerts", lambda i: (i.event.alert_id,), _alert)  # type: ignore[attr-defined]


class TwinProjection(Projection):
    name = "twin"
    subjects = (
        "mvs.evt.service.>", "mvs.evt.twin.>", "mvs.evt.model.>", "mvs.evt.flag.>",
        "mvs.evt.breaker.>", "mvs.evt.alert.>",
    )
    schema_file = "twin.sql"
    tables = (
        "services", "service_health", "service_lifecycle", "hosts", "host_samples", "models",
        "model_events", "flags", "flag_history", "breakers", "breaker_history", "alerts",
    )
    keys: ClassVar[dict[str, tuple[str, ...]]] = {
        "services": ("service",), "hosts": ("host",), "models": ("model_id",),
        "flags": ("name",), "breakers": ("service", "dependency"), "alerts": ("alert_id",),
    }
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = {
        sy.ServiceRegistered: (_SVC, _lifecycle("register")),
        sy.ServiceDeregistered: (_SVC, _lifecycle("deregister")),
        sy.ServiceHealth: (_SVC, Append("service_health", _health)),
        sy.ServiceCrashed: (_SVC, _lifecycle("crash")),
        sy.ServiceRestarted: (_SVC, _lifecycle("restart")),
        sy.HostSampled: (
            Merge("hosts", lambda i: (i.event.host,), _host),  # type: ignore[attr-defined]
            Append("host_samples", _sample),
        ),
        md.ModelLoaded: (_MODEL, _MODEL_EVENT),
        md.ModelUnloaded: (_MODEL, _MODEL_EVENT),
        md.ModelEvicted: (_MODEL, _MODEL_EVENT),
        md.ModelLoadFailed: (_MODEL, _MODEL_EVENT),
        sy.FeatureFlagSet: (
            Merge("flags", lambda i: (i.event.name,), _flag),  # type: ignore[attr-defined]
            Append("flag_history", _flag_history),
        ),
        sy.BreakerStateChanged: (
            Merge(
                "breakers",
                lambda i: (i.event.service, i.event.dependency),  # type: ignore[attr-defined]
                _breaker,
            ),
            Append("breaker_history", _breaker_history),
        ),
        sy.AlertRaised: (_ALERT,),
        sy.AlertCleared: (_ALERT,),
    }
