"""The request pipeline: a request's arrival, route, stages and outcome."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from streams.base import Event

RequestKind = Literal["text", "audio", "vision"]
Route = Literal["local_model", "cloud_api", "cache", "legacy", "none"]
Outcome = Literal["ok", "error", "timeout", "rejected"]


class RequestReceived(Event, frozen=True, kw_only=True, tag="request.received.v1"):
    domain: ClassVar[str] = "request"
    key_field: ClassVar[str | None] = "request_id"

    request_id: str
    kind: RequestKind = "text"
    text: str = ""
    session_id: str | None = None
    user_id: str | None = None
    priority: int = 5
    task_type: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class RequestRouted(Event, frozen=True, kw_only=True, tag="request.routed.v1"):
    domain: ClassVar[str] = "request"
    key_field: ClassVar[str | None] = "request_id"

    request_id: str
    task_type: str
    route: Route
    reason: str = ""
    fallback_from: Route | None = None
    flags: dict[str, bool] = msgspec.field(default_factory=dict)


class RequestStageCompleted(Event, frozen=True, kw_only=True, tag="request.stage.v1"):
    domain: ClassVar[str] = "request"
    key_field: ClassVar[str | None] = "request_id"

    request_id: str
    stage: str
    duration_ms: float
    ok: bool = True
    detail: str = ""


class RequestCompleted(Event, frozen=True, kw_only=True, tag="request.completed.v1"):
    domain: ClassVar[str] = "request"
    key_field: ClassVar[str | None] = "request_id"

    request_id: str
    outcome: Outcome
    route: Route = "none"
    latency_ms: float = 0.0
    reply_text: str = ""
    error: str | None = None


EVENTS = (RequestReceived, RequestRouted, RequestStageCompleted, RequestCompleted)
