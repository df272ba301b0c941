"""Services, hosts, flags, breakers, cache and alerts: what the digital twin is folded from."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from streams.base import Event

HealthStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
BreakerState = Literal["closed", "open", "half_open"]
Severity = Literal["critical", "warning", "info"]


class ServiceRegistered(Event, frozen=True, kw_only=True, tag="service.registered.v1"):
    domain: ClassVar[str] = "service"
    key_field: ClassVar[str | None] = "service"

    service: str
    host: str
    instance_id: str
    endpoint: str = ""
    version: str = ""
    pid: int | None = None
    port: int | None = None
    health_port: int | None = None
    protocol: str = "nats"


class ServiceDeregistered(Event, frozen=True, kw_only=True, tag="service.deregistered.v1"):
    domain: ClassVar[str] = "service"
    key_field: ClassVar[str | None] = "service"

    service: str
    instance_id: str
    reason: str = ""


class ServiceHealthV1(Event, frozen=True, kw_only=True, tag="service.health.v1"):
    """First health report: a bare yes/no. Upcast to :class:`ServiceHealth` on read."""

    domain: ClassVar[str] = "service"
    key_field: ClassVar[str | None] = "service"

    service: str
    healthy: bool
    detail: str = ""


class ServiceHealth(Event, frozen=True, kw_only=True, tag="service.health.v2"):
    domain: ClassVar[str] = "service"
    key_field: ClassVar[str | None] = "service"

    service: str
    status: HealthStatus
    host: str = ""
    instance_id: str = ""
    detail: str = ""
    latency_ms: float | None = None
    checks: dict[str, str] = msgspec.field(default_factory=dict)


class ServiceCrashed(Event, frozen=True, kw_only=True, tag="service.crashed.v1"):
    domain: ClassVar[str] = "service"
    key_field: ClassVar[str | None] = "service"

    service: str
    host: str = ""
    exit_code: int | None = None
    reason: str = ""


class ServiceRestarted(Event, frozen=True, kw_only=True, tag="service.restarted.v1"):
    domain: ClassVar[str] = "service"
    key_field: ClassVar[str | None] = "service"

    service: str
    host: str = ""
    attempt: int = 1
    backoff_s: float = 0.0


class HostSampled(Event, frozen=True, kw_only=True, tag="twin.host_sampled.v1"):
    domain: ClassVar[str] = "twin"
    key_field: ClassVar[str | None] = "host"

    host: str
    cpu_percent: float
    memory_used_mb: float
    memory_total_mb: float
    load_average: float | None = None
    disk_used_percent: float | None = None
    gpu: dict[str, float] = msgspec.field(default_factory=dict)


class FeatureFlagSet(Event, frozen=True, kw_only=True, tag="flag.set.v1"):
    domain: ClassVar[str] = "flag"
    key_field: ClassVar[str | None] = "name"

    name: str
    fraction: float
    previous: float | None = None
    actor: str = ""


class BreakerStateChanged(Event, frozen=True, kw_only=True, tag="breaker.changed.v1"):
    domain: ClassVar[str] = "breaker"
    key_field: ClassVar[str | None] = "dependency"

    service: str
    dependency: str
    from_state: BreakerState
    to_state: BreakerState
    failures: int = 0
    reason: str = ""


class CacheEntrySet(Event, frozen=True, kw_only=True, tag="cache.set.v1"):
    domain: ClassVar[str] = "cache"
    key_field: ClassVar[str | None] = "cache_type"

    cache_type: str
    entry_key: str
    ttl_s: float
    size_bytes: int = 0


class CacheEntryInvalidated(Event, frozen=True, kw_only=True, tag="cache.invalidated.v1"):
    domain: ClassVar[str] = "cache"
    key_field: ClassVar[str | None] = "cache_type"

    cache_type: str
    entry_key: str
    reason: str = ""


class AlertRaised(Event, frozen=True, kw_only=True, tag="alert.raised.v1"):
    domain: ClassVar[str] = "alert"
    key_field: ClassVar[str | None] = "alert_id"

    alert_id: str
    severity: Severity
    message: str
    service: str = ""
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


class AlertCleared(Event, frozen=True, kw_only=True, tag="alert.cleared.v1"):
    domain: ClassVar[str] = "alert"
    key_field: ClassVar[str | None] = "alert_id"

    alert_id: str
    message: str = ""


class ServiceCallCompleted(Event, frozen=True, kw_only=True, tag="service.call.v1"):
    """One request answered by a service endpoint, with its outcome (service framework)."""

    domain: ClassVar[str] = "service"
    key_field: ClassVar[str | None] = "service"

    service: str
    action: str
    call_id: str
    outcome: str  # ok | bad_request | not_found | error | unavailable
    latency_ms: float
    host: str = ""
    error: str | None = None
    request_bytes: int = 0


EVENTS = (
    ServiceRegistered,
    ServiceDeregistered,
    ServiceHealthV1,
    ServiceHealth,
    ServiceCrashed,
    ServiceRestarted,
    HostSampled,
    FeatureFlagSet,
    BreakerStateChanged,
    CacheEntrySet,
    CacheEntryInvalidated,
    AlertRaised,
    AlertCleared,
    ServiceCallCompleted,
)
