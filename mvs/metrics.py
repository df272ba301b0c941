"""Every Prometheus metric of MVS, defined once.

Names follow ``mvs_<subsystem>_<what>_{total,seconds}`` (gauges name their unit); labels come
from closed sets only: service and action names from the config, outcomes, states, flag
names, cache types. Never request, session or model-instance ids.

Each OS process has its own default registry; ObservabilityHub gathers every process's
samples (see :func:`exposition`) and serves them on one ``/metrics`` endpoint.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = [
    "BREAKER_STATE",
    "BREAKER_TRANSITIONS",
    "BUS_BATCH_SIZE",
    "BUS_EVENTS",
    "BUS_FLUSH_SECONDS",
    "CACHE_REQUESTS",
    "FLAG_DECISIONS",
    "FLAG_FRACTION",
    "HOST_CPU_PERCENT",
    "HOST_MEMORY_USED_BYTES",
    "LEGACY_BRIDGE_CALLS",
    "LEGACY_BRIDGE_SECONDS",
    "SERVICE_REQUESTS",
    "SERVICE_REQUEST_SECONDS",
    "SERVICE_UP",
    "SUPERVISOR_RESTARTS",
    "WORK_JOBS",
    "exposition",
]

# Request latencies of interest run from sub-millisecond (cache hits) to seconds (LLM).
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

SERVICE_REQUESTS = Counter(
    "mvs_service_requests_total",
    "Requests answered by a service endpoint",
    ["service", "action", "outcome"],  # outcome: ok | bad_request | error | unavailable
)
SERVICE_REQUEST_SECONDS = Histogram(
    "mvs_service_request_seconds",
    "Time from receiving a request to sending its reply",
    ["service", "action"],
    buckets=_LATENCY_BUCKETS,
)
SERVICE_UP = Gauge("mvs_service_up", "1 while the service runs in this process", ["service"])

BUS_EVENTS = Counter(
    "mvs_bus_events_total",
    "Events handed to the event log",
    ["mode", "outcome"],  # mode: interactive | background; outcome: ok | error | dropped
)
BUS_BATCH_SIZE = Histogram(
    "mvs_bus_batch_size",
    "Events per background flush",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000),
)
BUS_FLUSH_SECONDS = Histogram(
    "mvs_bus_flush_seconds", "Time to publish one background batch", buckets=_LATENCY_BUCKETS
)

BREAKER_TRANSITIONS = Counter(
    "mvs_breaker_transitions_total",
    "Circuit breaker state changes",
    ["service", "dependency", "to_state"],
)
BREAKER_STATE = Gauge(
    "mvs_breaker_state",
    "Circuit breaker state: 0 closed, 1 half_open, 2 open",
    ["service", "dependency"],
)

FLAG_FRACTION = Gauge("mvs_flag_fraction", "Share of sessions a feature flag is on for", ["flag"])
FLAG_DECISIONS = Counter(
    "mvs_flag_decisions_total", "Feature flag evaluations", ["flag", "enabled"]
)

SUPERVISOR_RESTARTS = Counter(
    "mvs_supervisor_restarts_total", "Service processes restarted after a crash", ["group"]
)
WORK_JOBS = Counter(
    "mvs_work_jobs_total",
    "AsyncProcessor jobs finished",
    ["task_type", "outcome"],  # outcome: ok | retried | dead_lettered
)
CACHE_REQUESTS = Counter(
    "mvs_cache_requests_total", "CacheManager lookups", ["cache_type", "outcome"]
)
LEGACY_BRIDGE_CALLS = Counter(
    "mvs_legacy_bridge_calls_total",
    "Requests sent to legacy agents over ZeroMQ by the cutover bridge",
    ["agent", "outcome"],  # outcome: ok | error_reply | timeout | bad_reply | refused
)
LEGACY_BRIDGE_SECONDS = Histogram(
    "mvs_legacy_bridge_seconds",
    "Time from sending a legacy request to its reply",
    ["agent"],
    buckets=_LATENCY_BUCKETS,
)
HOST_CPU_PERCENT = Gauge("mvs_host_cpu_percent", "Host CPU use, percent", ["host"])
HOST_MEMORY_USED_BYTES = Gauge("mvs_host_memory_used_bytes", "Host memory in use", ["host"])


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """This process's metrics in the Prometheus text format."""
    return generate_latest(registry)
