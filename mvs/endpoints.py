"""Endpoints: the ``@endpoint`` decorator and the handler that wraps every request.

The handler decodes the request into the endpoint's Struct (JSON or MessagePack), runs the
method, encodes the reply in the request's encoding, turns any exception into an error reply
(:func:`mvs.rpc.classify_error`), counts and times the call, and records it as a
``service.call.v1`` event. See :mod:`mvs.service` for the whole contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER, Request

from mvs.errors import MvsError
from mvs.metrics import SERVICE_REQUEST_SECONDS, SERVICE_REQUESTS
from mvs.rpc import CORRELATION_HEADER, ErrorReply, classify_error
from streams.events.system import ServiceCallCompleted

__all__ = ["Call", "EndpointSpec", "current_call", "endpoint", "make_handler"]

Req = TypeVar("Req", bound=msgspec.Struct)
Rep = TypeVar("Rep", bound=msgspec.Struct)

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class _BadRequest(MvsError, ValueError):
    pass


@dataclass(frozen=True)
class Call:
    """What a handler may want to know about the request it is answering."""

    service: str
    action: str
    call_id: str
    correlation_id: str | None
    headers: dict[str, str]
    received_at: float


_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar("mvs_call", default=None)


def current_call() -> Call | None:
    """The call being handled by the current task, if any."""
    return _current.get()


@dataclass(frozen=True)
class EndpointSpec:
    action: str
    request: type[msgspec.Struct]
    reply: type[msgspec.Struct]
    record: bool
    concurrency: int
    method: str = ""


def endpoint(
    action: str,
    *,
    request: type[Req],
    reply: type[Rep],
    record: bool = True,
    concurrency: int = 1,
) -> Callable[[Callable[[Any, Req], Awaitable[Rep]]], Callable[[Any, Req], Awaitable[Rep]]]:
    """Mark an ``async def handler(self, req) -> reply`` method as the endpoint ``action``."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")

    def mark(fn: Callable[[Any, Req], Awaitable[Rep]]) -> Callable[[Any, Req], Awaitable[Rep]]:
        fn.__mvs_endpoint__ = EndpointSpec(  # type: ignore[attr-defined]
            action, request, reply, record, concurrency, fn.__name__
        )
        return fn

    return mark


def make_handler(owner: Any, spec: EndpointSpec) -> Callable[[Request], Awaitable[None]]:
    """The micro handler of one endpoint of ``owner`` (a :class:`mvs.service.Service`)."""
    method = getattr(owner, spec.method)
    name = owner.name
    json_dec = msgspec.json.Decoder(spec.request)
    mp_dec = msgspec.msgpack.Decoder(spec.request)
    gate = asyncio.Semaphore(spec.concurrency) if spec.concurrency > 1 else None
    # label lookups cost microseconds per call: resolve the children once
    seconds = SERVICE_REQUEST_SECONDS.labels(name, spec.action)
    counted: dict[str, Any] = {}

    async def handle(request: Request) -> None:
        received = time.perf_counter()
        data = request.data
        as_json = not data or data[:1] == b"{"
        headers = request.headers or {}
        call = Call(
            name,
            spec.action,
            uuid.uuid4().hex,
            headers.get(CORRELATION_HEADER),
            dict(headers),
            time.time(),
        )
        token = _current.set(call)
        outcome, error, code = "ok", None, ""
        try:
            try:
                req = json_dec.decode(data or b"{}") if as_json else mp_dec.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise _BadRequest(
                    f"malformed {spec.request.__name__} request for "
                    f"{name}.{spec.action}: {exc}"
                ) from exc
            reply = await method(req)
            body = _json.encode(reply) if as_json else _msgpack.encode(reply)
            await request.respond(body)
        except Exception as exc:  # every failure becomes an error reply; the service lives on
            outcome, code, error = classify_error(exc)
            if code == "500":
                owner.log.error(
                    "request failed",
                    exc_info=exc,
                    extra={"service": name, "action": spec.action},
                )
            owner._errors[spec.action] = owner._errors.get(spec.action, 0) + 1
            err = ErrorReply(error=error, code=code, service=name, action=spec.action)
            with contextlib.suppress(Exception):
                await request.respond(
                    _json.encode(err) if as_json else _msgpack.encode(err),
                    headers={ERROR_HEADER: error[:1024], ERROR_CODE_HEADER: code},
                )
        finally:
            _current.reset(token)
        elapsed = time.perf_counter() - received
        counter = counted.get(outcome)
        if counter is None:
            counter = counted[outcome] = SERVICE_REQUESTS.labels(
                name, spec.action, outcome
            )
        counter.inc()
        seconds.observe(elapsed)
        if spec.record:
            owner.ctx.events.emit(
                ServiceCallCompleted(
                    service=name,
                    action=spec.action,
                    call_id=call.call_id,
                    outcome=outcome,
                    latency_ms=round(elapsed * 1000.0, 3),
                    host=owner.ctx.host,
                    error=error,
                    request_bytes=len(data),
                    correlation_id=call.correlation_id,
                    source=name,
                )
            )

    if gate is None:
        return handle

    async def handle_concurrently(request: Request) -> None:
        await gate.acquire()

        async def run() -> None:
            try:
                await handle(request)
            finally:
                gate.release()

        owner.spawn(run(), name=f"{name}.{spec.action}")

    return handle_concurrently
