"""Shadow replay: recorded legacy request/reply traces replayed against MVS, replies compared.

Trace format (JSON Lines, one exchange per line, UTF-8)::

    {"time": "2025-06-18T17:33:32Z", "agent": "MemoryOrchestratorService",
     "request": {"action": "get_memory", "data": {"memory_id": "mem-1"}, "request_id": "...",
                 "source_agent": "...", "timestamp": "..."},
     "reply": {"status": "success", "memory": {"memory_id": "mem-1", "content": "..."}},
     "latency_ms": 12.5}

* ``time``: when the legacy agent answered: ISO 8601 or epoch seconds (traces are replayed in
  file order; the time is reported, not waited for).
* ``agent``: the legacy agent's name as in its startup config (FORMATS.md L10).
* ``request``: the envelope exactly as the agent received it (L11): ``action`` for most
  agents, ``type`` for RequestCoordinator/AsyncProcessor, no key for TranslationService.
* ``reply``: the JSON object the agent sent back (``status`` ``success``/``ok``/``error``).
* ``latency_ms`` (optional): the legacy agent's own latency, reported beside MVS's.

A line that is not such an object is reported with its line number and reason and skipped.

Each request goes to a *target*: :class:`MvsTarget` translates the envelope to an MVS service
request (``mvs.svc.<service>.<action>``, the service found from the legacy agent through the
config's ``legacy_agents`` map; the action through :data:`ACTION_ALIASES`; the payload is the
envelope's ``data`` or ``payload`` object, else its other fields; a service with an endpoint
for the legacy dialect, :data:`WHOLE_ENVELOPE`, gets the envelope as it is) and translates the reply
back to the legacy shape (``{"status": "success", **reply}``, a single record nested as the
legacy agent nested it, see :data:`REPLY_NESTING`); :class:`LegacyTarget` sends it to a
live legacy agent through the bridge. The replies are compared by
:func:`replay.compare.comparator_for` (exact for deterministic actions, tolerant for model
output, status otherwise) and summed up in a :class:`ShadowReport`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from mvs.errors import DecodeError, MvsError
from replay.bridge import LegacyBridge, dispatch_key, envelope_action
from replay.compare import comparator_for
from streams.subjects import service_subject

__all__ = [
    "ACTION_ALIASES",
    "REPLY_NESTING",
    "WHOLE_ENVELOPE",
    "ActionStats",
    "LegacyTarget",
    "Mismatch",
    "MvsTarget",
    "ShadowReport",
    "Target",
    "TraceRecord",
    "read_trace",
    "route_request",
    "run_shadow",
]


class TraceRecord(msgspec.Struct, frozen=True, kw_only=True):
    time: float | str
    agent: str
    request: dict[str, Any]
    reply: dict[str, Any]
    latency_ms: float | None = None


_trace_decoder = msgspec.json.Decoder(TraceRecord)


def read_trace(path: Path) -> Iterator[tuple[int, TraceRecord | str]]:
    """Yield ``(line_no, record)``, or ``(line_no, reason)`` for a line that is not one."""
    with path.open("rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, _trace_decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                yield line_no, f"not a trace record: {exc}"


# Legacy action -> MVS action, per MVS service; an action not listed keeps its name.
ACTION_ALIASES: dict[str, dict[str, str]] = {
    "MemoryOrchestratorService": {
        "add_memory": "add", "create": "add", "get_memory": "get", "read": "get",
        "search_memory": "search", "search": "search", "update_memory": "update",
        "upsert": "update", "delete_memory": "delete", "delete": "delete",
        "reinforce_memory": "reinforce", "add_relationship": "relate",
        "get_relationships": "relationships",
    },
    "TranslationService": {"translate": "translate"},
}
# Services with an endpoint that takes the legacy envelope as it is (and answers in the legacy
# shape): RequestCoordinator's ``legacy`` endpoint speaks the port-26002 dialect.
WHOLE_ENVELOPE: dict[str, str] = {"RequestCoordinator": "legacy"}
# MVS replies that carry one record at the top level, where the legacy reply nested it.
REPLY_NESTING: dict[tuple[str, str], str] = {
    ("MemoryOrchestratorService", "get"): "memory",
    ("MemoryOrchestratorService", "reinforce"): "memory",
}
_BASE = frozenset({"source_agent", "request_id", "timestamp"})


class Target(Protocol):
    name: str

    async def send(self, agent: str, envelope: dict[str, Any]) -> dict[str, Any]:
        """The reply, in the legacy shape; raises :class:`MvsError` if none came."""
        ...


def route_request(
    agent: str, envelope: Mapping[str, Any], agent_services: Mapping[str, str]
) -> tuple[str, str, dict[str, Any]]:
    """(MVS service, action, payload) for a legacy envelope; see the module docstring."""
    service = agent_services.get(agent)
    if service is None:
        raise LookupError(f"legacy agent {agent} has no MVS service in the config map")
    if service in WHOLE_ENVELOPE:
        return service, WHOLE_ENVELOPE[service], dict(envelope)
    legacy_action = envelope_action(agent, envelope)
    action = ACTION_ALIASES.get(service, {}).get(legacy_action, legacy_action)
    if not action:
        raise ValueError(f"request to {agent} names no action")
    for key in ("data", "payload"):
        if isinstance(envelope.get(key), dict) and dispatch_key(agent) == "action":
            return service, action, dict(envelope[key])
    drop = _BASE | {dispatch_key(agent) or ""}
    return service, action, {k: v for k, v in envelope.items() if k not in drop}


@dataclass
class MvsTarget:
    """MVS services over NATS; ``agent_services`` maps legacy agents to MVS services."""

    nc: Client
    agent_services: Mapping[str, str]
    timeout_s: float = 10.0
    name: str = "mvs"

    def route(self, agent: str, envelope: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
        return route_request(agent, envelope, self.agent_services)

    async def send(self, agent: str, envelope: dict[str, Any]) -> dict[str, Any]:
        service, action, payload = self.route(agent, envelope)
        subject = service_subject(service, action)
        try:
            msg = await self.nc.request(subject, json.dumps(payload).encode(),
                                        timeout=self.timeout_s)
        except nats.errors.NoRespondersError as exc:
            raise MvsError(f"{service} is not running (no responder on {subject})") from exc
        except nats.errors.TimeoutError as exc:
            raise MvsError(f"{service}.{action} did not answer in {self.timeout_s:g} s") from exc
        headers = msg.headers or {}
        if ERROR_HEADER in headers:
            return {"status": "error", "error": headers[ERROR_HEADER],
                    "code": headers.get(ERROR_CODE_HEADER, "500")}
        try:
            body = msgspec.json.decode(msg.data) if msg.data else {}
        except msgspec.DecodeError:
            body = msgspec.msgpack.decode(msg.data)
        if not isinstance(body, dict):
            body = {"result": body}
        nest = REPLY_NESTING.get((service, action))
        if nest is not None:
            return {"status": "success", nest: body}
        return {"status": "success", **body}


@dataclass
class LegacyTarget:
    """A live legacy system, through the bridge (to check a trace or the comparators)."""

    bridge: LegacyBridge
    name: str = "legacy"

    async def send(self, agent: str, envelope: dict[str, Any]) -> dict[str, Any]:
        return await self.bridge.send(agent, envelope)


@dataclass
class ActionStats:
    comparator: str
    total: int = 0
    matched: int = 0
    mismatched: int = 0
    failed: int = 0  # no reply from the target, or the request could not be routed
    latency_ms: list[float] = field(default_factory=list)
    legacy_latency_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Mismatch:
    line: int
    agent: str
    action: str
    comparator: str
    diff: list[str]
    expected: dict[str, Any]
    actual: dict[str, Any] | None


@dataclass
class ShadowReport:
    trace: str
    target: str
    actions: dict[str, ActionStats] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)
    rejected_lines: list[tuple[int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(s.total for s in self.actions.values())

    @property
    def ok(self) -> bool:
        bad = sum(s.mismatched + s.failed for s in self.actions.values())
        return bad == 0 and not self.rejected_lines

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "target": self.target,
            "ok": self.ok,
            "total": self.total,
            "elapsed_s": round(self.elapsed_s, 3),
            "actions": {
                k: {"comparator": s.comparator, "total": s.total, "matched": s.matched,
                    "mismatched": s.mismatched, "failed": s.failed,
                    "p50_ms": _pct(s.latency_ms, 50), "p95_ms": _pct(s.latency_ms, 95),
                    "legacy_p50_ms": _pct(s.legacy_latency_ms, 50)}
                for k, s in sorted(self.actions.items())
            },
            "mismatches": [
                {"line": m.line, "agent": m.agent, "action": m.action,
                 "comparator": m.comparator, "diff": m.diff, "expected": m.expected,
                 "actual": m.actual}
                for m in self.mismatches
            ],
            "rejected_lines": [{"line": n, "reason": r} for n, r in self.rejected_lines],
        }

    def table(self) -> str:
        lines = [f"shadow replay of {self.trace} against {self.target}: "
                 f"{self.total} requests in {self.elapsed_s:.1f} s",
                 f"{'AGENT.ACTION':<44} {'CMP':<8} {'TOTAL':>6} {'MATCH':>6} {'DIFF':>6} "
                 f"{'FAIL':>6} {'P50MS':>8} {'P95MS':>8}"]
        for key, s in sorted(self.actions.items()):
            lines.append(f"{key:<44} {s.comparator:<8} {s.total:>6} {s.matched:>6} "
                         f"{s.mismatched:>6} {s.failed:>6} {_fmt(_pct(s.latency_ms, 50)):>8} "
                         f"{_fmt(_pct(s.latency_ms, 95)):>8}")
        for m in self.mismatches:
            lines.append(f"line {m.line} {m.agent}.{m.action} ({m.comparator}):")
            lines.extend(f"    {d}" for d in m.diff)
        for n, reason in self.rejected_lines:
            lines.append(f"line {n}: rejected: {reason}")
        lines.append("OK: every reply matched" if self.ok else "MISMATCH: see above")
        return "\n".join(lines)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[index], 3)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


async def run_shadow(
    trace: Path,
    target: Target,
    *,
    min_similarity: float | None = None,
    ignore: tuple[str, ...] = (),
    limit: int | None = None,
    max_mismatches: int = 200,
) -> ShadowReport:
    """Replay every request of ``trace`` against ``target`` in order; compare the replies."""
    if not trace.is_file():
        raise DecodeError(f"trace {trace} does not exist")
    report = ShadowReport(trace=str(trace), target=target.name)
    started = time.perf_counter()
    for line_no, record in read_trace(trace):
        if isinstance(record, str):
            report.rejected_lines.append((line_no, record))
            continue
        if limit is not None and report.total >= limit:
            break
        action = envelope_action(record.agent, record.request) or "?"
        comparator = comparator_for(action, expected=record.reply,
                                    min_similarity=min_similarity, ignore=ignore)
        stats = report.actions.setdefault(f"{record.agent}.{action}",
                                          ActionStats(comparator.kind))
        stats.total += 1
        if record.latency_ms is not None:
            stats.legacy_latency_ms.append(record.latency_ms)
        t0 = time.perf_counter()
        actual: dict[str, Any] | None
        try:
            actual = await target.send(record.agent, dict(record.request))
        except (MvsError, LookupError, ValueError) as exc:
            stats.failed += 1
            diff = [f"no reply: {exc}"]
            actual = None
        else:
            stats.latency_ms.append((time.perf_counter() - t0) * 1000.0)
            diff = comparator.compare(record.reply, actual)
            if diff:
                stats.mismatched += 1
            else:
                stats.matched += 1
        if diff and len(report.mismatches) < max_mismatches:
            report.mismatches.append(Mismatch(line_no, record.agent, action, comparator.kind,
                                              diff, record.reply, actual))
    report.elapsed_s = time.perf_counter() - started
    return report
