"""The wire side of MVS services: request/reply envelopes and the typed client.

:mod:`mvs.service` builds services; this module is what a caller needs (and all a caller
needs): :class:`ServiceClient`, the :class:`ErrorReply` every error carries, and the
:class:`HealthReply` / :class:`Heartbeat` every service sends.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from mvs.errors import CircuitOpen, ServiceCallError
from streams.events.system import HealthStatus
from streams.subjects import service_subject

__all__ = [
    "CORRELATION_HEADER",
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "HEARTBEAT_PREFIX",
    "Empty",
    "ErrorReply",
    "HealthReply",
    "Heartbeat",
    "ServiceClient",
    "classify_error",
]

CORRELATION_HEADER = "Mvs-Correlation-Id"
HEARTBEAT_PREFIX = "mvs.hb"

Rep = TypeVar("Rep", bound=msgspec.Struct)

_msgpack = msgspec.msgpack.Encoder()


class Empty(msgspec.Struct, frozen=True, kw_only=True):
    """A request or reply with no fields (an empty body decodes to it)."""


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every error reply."""

    error: str
    code: str
    service: str
    action: str


class HealthReply(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    status: HealthStatus
    host: str
    instance_id: str
    version: str
    pid: int
    uptime_s: float
    checks: dict[str, str] = msgspec.field(default_factory=dict)
    breakers: dict[str, str] = msgspec.field(default_factory=dict)


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """Published on ``mvs.hb.<service>`` every ``heartbeat_s`` (core NATS, not stored)."""

    service: str
    host: str
    instance_id: str
    status: HealthStatus
    at: float
    pid: int
    process: str = ""


def classify_error(exc: Exception) -> tuple[str, str, str]:
    """(outcome, code, message) for a failed request."""
    if isinstance(exc, CircuitOpen):
        return "unavailable", "503", str(exc)
    if isinstance(exc, ServiceCallError):
        return "error", exc.code, str(exc)
    if isinstance(exc, ValueError):
        return "bad_request", "400", str(exc)
    if isinstance(exc, LookupError):
        return "not_found", "404", str(exc.args[0] if exc.args else exc)
    return "error", "500", f"internal error: {type(exc).__name__}: {exc}"


class ServiceClient:
    """Typed calls to MVS services over NATS (MessagePack on the wire)."""

    def __init__(self, nc: Client, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def call(
        self,
        service: str,
        action: str,
        request: msgspec.Struct | None,
        reply_type: type[Rep],
        *,
        timeout: float | None = None,
        correlation_id: str | None = None,
    ) -> Rep:
        """Send ``request`` to ``mvs.svc.<service>.<action>`` and decode the reply."""
        subject = service_subject(service, action)
        payload = _msgpack.encode(request) if request is not None else b""
        headers = {CORRELATION_HEADER: correlation_id} if correlation_id else None
        try:
            msg = await self.nc.request(
                subject, payload, timeout=timeout or self.timeout, headers=headers
            )
        except nats.errors.NoRespondersError as exc:
            raise ServiceCallError(f"{service} is not running (no responder on {subject})",
                                   code="503") from exc
        except nats.errors.TimeoutError as exc:
            raise ServiceCallError(
                f"{service}.{action} did not answer in time", code="504"
            ) from exc
        hdrs = msg.headers or {}
        if ERROR_HEADER in hdrs:
            raise ServiceCallError(
                f"{service}.{action}: {hdrs[ERROR_HEADER]}", code=hdrs.get(ERROR_CODE_HEADER, "500")
            )
        try:
            if msg.data[:1] == b"{":
                return msgspec.json.decode(msg.data, type=reply_type)
            return msgspec.msgpack.decode(msg.data, type=reply_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ServiceCallError(
                f"{service}.{action} sent a reply that is not a {reply_type.__name__}: {exc}",
                code="502",
            ) from exc
