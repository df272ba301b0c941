"""The legacy bridge: traffic not yet migrated goes to the legacy agents over ZeroMQ.

During cutover a feature flag sends a share of the traffic to MVS; the rest still has to reach
the legacy agents, in their own wire protocol (FORMATS.md L11): a REQ/REP exchange of one JSON
object each way. The envelope is what the legacy base class produced::

    {"action": "get_memory", "data": {...},                 # most agents
     "source_agent": "MVSLegacyBridge", "request_id": "<uuid4>", "timestamp": "<ISO 8601>"}

RequestCoordinator and AsyncProcessor dispatch on ``type`` instead of ``action``
(``{"type": "text", "data": ..., "context", "metadata", "user_id", "session_id"}``) and
TranslationService has no dispatch key (``{"text", "target_lang", "source_lang"?}``).
Replies are ``{"status": "success"|"ok"|"error", ...}`` with the error text under ``error`` or
``message``; an error reply is returned as it is (the agent is alive), only transport failures
raise.

A dead or silent agent must not take the bridge down with it:

* each call waits at most ``timeout_s``; a REQ socket that timed out is stuck in its
  send/receive state machine, so it is closed (linger 0) and a fresh one is made before the
  retry (the "lazy pirate" pattern). After ``retries`` retries the call fails with an
  :class:`~mvs.errors.UpstreamError` naming the agent and its endpoint;
* a circuit breaker per agent (:class:`mvs.breaker.CircuitBreaker`, the plan's 5 / 30 s / 3)
  refuses calls to an agent that keeps failing, with :class:`~mvs.errors.CircuitOpen`, instead
  of paying the timeout on every request;
* every call, answered or not, is a ``legacy.bridge_call.v1`` event, and breaker changes are
  ``breaker.changed.v1`` events, so the cutover's error rate is in the log.

With ``trace=PATH`` every answered exchange is also appended to a JSONL trace in the shadow
replay format (:mod:`replay.shadow`): what the legacy agents answered during the cutover can be
replayed against MVS afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from mvs.breaker import CircuitBreaker
from mvs.errors import CircuitOpen, UpstreamError
from mvs.metrics import LEGACY_BRIDGE_CALLS, LEGACY_BRIDGE_SECONDS
from streams.base import Event
from streams.events.legacy import LegacyBridgeCall

__all__ = [
    "BRIDGE_NAME",
    "LegacyBridge",
    "dispatch_key",
    "endpoints_from_configs",
    "envelope_action",
    "legacy_envelope",
    "reply_error",
    "reply_ok",
]

BRIDGE_NAME = "MVSLegacyBridge"
_TYPE_DISPATCH = frozenset({"RequestCoordinator", "AsyncProcessor"})
_NO_DISPATCH = frozenset({"TranslationService"})
_BASE_FIELDS = ("source_agent", "request_id", "timestamp")


def dispatch_key(agent: str) -> str | None:
    """The envelope key a legacy agent dispatches on: ``action``, ``type`` or none."""
    if agent in _TYPE_DISPATCH:
        return "type"
    if agent in _NO_DISPATCH:
        return None
    return "action"


def legacy_envelope(
    agent: str,
    action: str | None,
    fields: Mapping[str, Any] | None = None,
    *,
    source_agent: str = BRIDGE_NAME,
    request_id: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Build the envelope ``agent`` expects: its dispatch key, ``fields``, the base fields."""
    key = dispatch_key(agent)
    out: dict[str, Any] = {}
    if key is not None:
        if not action:
            raise ValueError(f"{agent} dispatches on {key!r}: a request needs one")
        out[key] = action
    out.update(fields or {})
    out["source_agent"] = source_agent
    out["request_id"] = request_id or str(uuid.uuid4())
    out["timestamp"] = timestamp or datetime.now(UTC).isoformat()
    return out


def envelope_action(agent: str, envelope: Mapping[str, Any]) -> str:
    """The action an envelope asks for (``translate`` for TranslationService)."""
    key = dispatch_key(agent)
    if key is None:
        return "translate"
    return str(envelope.get(key) or envelope.get("action") or "")


def reply_ok(reply: Mapping[str, Any]) -> bool:
    """A legacy reply means success unless its status says error (casing varies)."""
    status = str(reply.get("status", "ok")).lower()
    return status not in ("error", "failed", "failure")


def reply_error(reply: Mapping[str, Any]) -> str | None:
    if reply_ok(reply):
        return None
    return str(reply.get("error") or reply.get("message") or "error (no message)")


def endpoints_from_configs(
    paths: list[Path],
    *,
    hosts: Mapping[str, str] | None = None,
    port_offset: int = 0,
) -> dict[str, str]:
    """Each legacy agent's ``tcp://`` address from the legacy startup configs (L10).

    ``hosts`` maps the legacy host names (``mainpc``, ``pc2``) to addresses; both default to
    127.0.0.1. Agents without a port are left out.
    """
    from replay.readers.startup_config import load_inventory

    where = {"mainpc": "127.0.0.1", "pc2": "127.0.0.1", **(hosts or {})}
    inventory = load_inventory(paths, port_offset=port_offset)
    return {
        a.name: f"tcp://{where.get(a.host, a.host)}:{a.port}"
        for a in inventory.agents
        if a.port is not None
    }


class LegacyBridge:
    """REQ/REP calls to legacy agents, one lazily recreated socket and breaker per agent.

    ``endpoints`` maps agent names to ZeroMQ addresses (``tcp://127.0.0.1:7140``). ``emit``
    receives the events (pass ``EventPublisher.emit``); ``None`` records nothing.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        timeout_s: float = 5.0,
        retries: int = 1,
        emit: Callable[[Event], None] | None = None,
        failure_threshold: int = 5,
        breaker_timeout_s: float = 30.0,
        half_open_requests: int = 3,
        source_agent: str = BRIDGE_NAME,
        clock: Callable[[], float] = time.monotonic,
        trace: Path | None = None,
    ) -> None:
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        self.endpoints = dict(endpoints)
        self.timeout_s = timeout_s
        self.retries = retries
        self.source_agent = source_agent
        self._emit = emit
        # Answered exchanges are appended in the shadow-replay trace format (replay.shadow),
        # so the traffic the legacy side still serves becomes the test of the new side.
        self._trace = trace.open("a", encoding="utf-8") if trace is not None else None
        self._ctx = zmq.asyncio.Context()
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._breakers = {
            agent: CircuitBreaker(
                service=BRIDGE_NAME,
                dependency=agent,
                failure_threshold=failure_threshold,
                timeout_s=breaker_timeout_s,
                half_open_requests=half_open_requests,
                clock=clock,
                on_change=emit,
            )
            for agent in self.endpoints
        }

    def breaker(self, agent: str) -> CircuitBreaker:
        return self._breakers[self._known(agent)]

    def _known(self, agent: str) -> str:
        if agent not in self.endpoints:
            known = ", ".join(sorted(self.endpoints)) or "none"
            raise ValueError(f"no legacy endpoint for agent {agent!r} (known: {known})")
        return agent

    async def call(
        self,
        agent: str,
        action: str | None,
        fields: Mapping[str, Any] | None = None,
        *,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Send ``action`` with ``fields`` to ``agent`` in its envelope; return its reply."""
        envelope = legacy_envelope(agent, action, fields, source_agent=self.source_agent)
        return await self.send(agent, envelope, correlation_id=correlation_id)

    async def send(
        self,
        agent: str,
        envelope: Mapping[str, Any],
        *,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        """Send a ready envelope (e.g. from a recorded trace); base fields are filled in."""
        self._known(agent)
        env = dict(envelope)
        for name, value in zip(
            _BASE_FIELDS,
            (self.source_agent, str(uuid.uuid4()), datetime.now(UTC).isoformat()),
            strict=True,
        ):
            env.setdefault(name, value)
        action = envelope_action(agent, env)
        started = time.perf_counter()
        breaker = self._breakers[agent]
        try:
            breaker.acquire()
        except CircuitOpen as exc:
            LEGACY_BRIDGE_CALLS.labels(agent, "refused").inc()
            self._record(agent, env, action, False, started, f"circuit open: {exc}",
                         correlation_id)
            raise
        try:
            reply = await self._exchange(agent, env)
        except UpstreamError as exc:
            breaker.record(False)
            self._record(agent, env, action, False, started, str(exc), correlation_id)
            raise
        breaker.record(True)
        LEGACY_BRIDGE_SECONDS.labels(agent).observe(time.perf_counter() - started)
        LEGACY_BRIDGE_CALLS.labels(agent, "ok" if reply_ok(reply) else "error_reply").inc()
        self._record(agent, env, action, reply_ok(reply), started, reply_error(reply),
                     correlation_id)
        if self._trace is not None:
            line = {"time": datetime.now(UTC).isoformat(), "agent": agent, "request": env,
                    "reply": reply,
                    "latency_ms": round((time.perf_counter() - started) * 1000.0, 3)}
            self._trace.write(json.dumps(line, default=str) + "\n")
            self._trace.flush()
        return reply

    async def _exchange(self, agent: str, env: dict[str, Any]) -> dict[str, Any]:
        address = self.endpoints[agent]
        payload = json.dumps(env, default=str).encode()
        lock = self._locks.setdefault(agent, asyncio.Lock())
        async with lock:
            for _attempt in range(self.retries + 1):
                sock = self._socket(agent)
                try:
                    await sock.send(payload)
                    raw = await asyncio.wait_for(sock.recv(), self.timeout_s)
                except (TimeoutError, zmq.ZMQError):
                    # A REQ socket that got no reply cannot send again: drop it, make anew.
                    self._drop(agent)
                    continue
                except asyncio.CancelledError:
                    self._drop(agent)  # the caller gave up mid-exchange: same stuck socket
                    raise
                try:
                    reply = json.loads(raw)
                except ValueError as exc:
                    LEGACY_BRIDGE_CALLS.labels(agent, "bad_reply").inc()
                    raise UpstreamError(
                        f"legacy agent {agent} at {address} sent a reply that is not JSON: "
                        f"{raw[:80]!r}"
                    ) from exc
                if not isinstance(reply, dict):
                    LEGACY_BRIDGE_CALLS.labels(agent, "bad_reply").inc()
                    raise UpstreamError(
                        f"legacy agent {agent} at {address} sent {type(reply).__name__}, "
                        "not a JSON object"
                    )
                return reply
        attempts = self.retries + 1
        LEGACY_BRIDGE_CALLS.labels(agent, "timeout").inc()
        raise UpstreamError(
            f"legacy agent {agent} at {address} did not answer within {self.timeout_s:g} s "
            f"({attempts} attempt{'s' if attempts > 1 else ''})"
        )

    def _socket(self, agent: str) -> zmq.asyncio.Socket:
        sock = self._sockets.get(agent)
        if sock is None:
            sock = self._ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoints[agent])
            self._sockets[agent] = sock
        return sock

    def _drop(self, agent: str) -> None:
        sock = self._sockets.pop(agent, None)
        if sock is not None:
            sock.close(linger=0)

    def _record(
        self,
        agent: str,
        env: Mapping[str, Any],
        action: str,
        ok: bool,
        started: float,
        error: str | None,
        correlation_id: str | None,
    ) -> None:
        if self._emit is None:
            return
        self._emit(
            LegacyBridgeCall(
                agent=agent,
                request_id=str(env.get("request_id", "")),
                action=action,
                ok=ok,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                error=error,
                source=self.source_agent,
                correlation_id=correlation_id,
            )
        )

    async def close(self) -> None:
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        for agent in list(self._sockets):
            self._drop(agent)
        self._ctx.term()

    async def __aenter__(self) -> LegacyBridge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
