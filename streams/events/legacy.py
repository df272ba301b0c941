"""What the legacy system left behind that has no better home: logs, sweeps, observations.

Records that map onto a domain (a memory, a translation, a service) become that domain's
events; these types carry the rest, and the replay's own bookkeeping.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from streams.base import Event


class LegacyLogLine(Event, frozen=True, kw_only=True, tag="legacy.log_line.v1"):
    domain: ClassVar[str] = "legacy"
    key_field: ClassVar[str | None] = "agent"

    agent: str
    level: str
    message: str
    at: float | None = None
    source_file: str = ""
    line_no: int = 0


class LegacyHealthChecked(Event, frozen=True, kw_only=True, tag="legacy.health_checked.v1"):
    """One service's result in a legacy health sweep."""

    domain: ClassVar[str] = "legacy"
    key_field: ClassVar[str | None] = "service"

    service: str
    sweep_at: float
    status_text: str
    healthy: bool
    port: int | None = None
    response: str = ""
    host: str = "pc2"


class LegacyObservation(Event, frozen=True, kw_only=True, tag="legacy.observation.v1"):
    domain: ClassVar[str] = "legacy"
    key_field: ClassVar[str | None] = "kind"

    kind: str
    level: str
    message: str
    at: float | None = None
    elapsed_hours: float | None = None
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)


class LegacyRecordRejected(Event, frozen=True, kw_only=True, tag="legacy.rejected.v1"):
    """A legacy record that could not be mapped, kept with its location and reason."""

    domain: ClassVar[str] = "legacy"
    key_field: ClassVar[str | None] = "source_format"

    source_format: str
    source_path: str
    location: str
    reason: str
    raw: str = ""


class LegacyBridgeCall(Event, frozen=True, kw_only=True, tag="legacy.bridge_call.v1"):
    """A request sent to a legacy agent over ZeroMQ by the cutover bridge, and its outcome."""

    domain: ClassVar[str] = "legacy"
    key_field: ClassVar[str | None] = "agent"

    agent: str
    request_id: str
    action: str = ""
    ok: bool = True
    latency_ms: float = 0.0
    error: str | None = None


class ReplayCompleted(Event, frozen=True, kw_only=True, tag="legacy.replay_completed.v1"):
    domain: ClassVar[str] = "legacy"
    key_field: ClassVar[str | None] = "source_format"

    source_format: str
    source_path: str
    records_read: int
    events_written: int
    duplicates: int
    rejected: int
    summary: dict[str, int] = msgspec.field(default_factory=dict)


EVENTS = (
    LegacyLogLine,
    LegacyHealthChecked,
    LegacyObservation,
    LegacyRecordRejected,
    LegacyBridgeCall,
    ReplayCompleted,
)
