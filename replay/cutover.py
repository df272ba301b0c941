"""Cutover, per the plan's Step 6.1: step the feature flags from 10 % to 100 % and watch.

At each step the chosen flags are set to the step's fraction (``flag.set.v1`` events, actor
``cutover``), then ``N`` requests are driven through the system the way production traffic
would go: each request's flag (:func:`flag_for`) decides, sticky per session, whether it takes
the MVS path (:class:`replay.shadow.MvsTarget`) or the legacy path (the ZeroMQ bridge,
:class:`replay.shadow.LegacyTarget`). The step reports its error rate and latency p50/p95,
overall and per path. A step whose error rate exceeds ``max_error_rate`` stops the cutover;
the flags go back to the last good step's fraction (0 when the first step failed) unless
``revert`` is off, and the report says where and why it stopped.

Requests are generated (:func:`generated_requests`, a small deterministic mix of registry and
memory requests) or taken from a recorded trace (:func:`trace_requests`, the shadow format);
from a trace, a request counts as an error when its status class differs from the recorded
reply's (a recorded "not found" is not an error when MVS says "not found" too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvs.errors import MvsError
from mvs.flags import FlagStore
from replay.compare import status_class
from replay.shadow import Target, read_trace

__all__ = [
    "DEFAULT_STEPS",
    "PLAN_FLAGS",
    "CutoverReport",
    "CutoverRequest",
    "Router",
    "StepResult",
    "flag_for",
    "generated_requests",
    "run_cutover",
    "trace_requests",
]

PLAN_FLAGS = ("use_mvs_routing", "use_unified_memory", "use_consolidated_emotion")
DEFAULT_STEPS = (10, 25, 50, 100)
_FLAG_OF_SERVICE = {
    "MemoryOrchestratorService": "use_unified_memory",
    "EmotionService": "use_consolidated_emotion",
}


def flag_for(service: str | None) -> str:
    """The plan's flag that governs traffic for an MVS service (routing for all the rest)."""
    return _FLAG_OF_SERVICE.get(service or "", "use_mvs_routing")


@dataclass(frozen=True)
class CutoverRequest:
    agent: str
    envelope: dict[str, Any]
    session_id: str
    expected: dict[str, Any] | None = None


# A mix both sides answer without a model, so that a step measures routing, not inference.
DEFAULT_CATALOG: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ServiceRegistry", {"action": "list_agents"}),
    ("ServiceRegistry", {"action": "get_agent_endpoint", "agent_name": "ServiceRegistry"}),
    ("MemoryOrchestratorService", {"action": "search_memory",
                                   "data": {"query": "cutover check", "limit": 3}}),
)


def generated_requests(
    n: int, *, catalog: Sequence[tuple[str, dict[str, Any]]] = DEFAULT_CATALOG, seed: int = 0
) -> list[CutoverRequest]:
    """``n`` requests cycling through ``catalog``, each from its own session."""
    return [
        CutoverRequest(agent, dict(envelope), f"cutover-{seed}-{i}")
        for i, (agent, envelope) in zip(range(n), _cycle(catalog), strict=False)
    ]


def _cycle(items: Sequence[Any]) -> Iterable[Any]:
    while True:
        yield from items


def trace_requests(path: Path, n: int | None = None) -> list[CutoverRequest]:
    """The requests of a shadow trace (cycled to ``n`` if given), with their recorded replies."""
    out = []
    for line_no, record in read_trace(path):
        if isinstance(record, str):
            continue
        req = record.request
        raw = req.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        session = (req.get("session_id") or req.get("user_id") or data.get("session_id")
                   or f"trace-{line_no}")
        out.append(CutoverRequest(record.agent, dict(req), str(session), dict(record.reply)))
    if not out:
        raise MvsError(f"trace {path} holds no usable request")
    if n is None:
        return out
    return [r for r, _ in zip(_cycle(out), range(n), strict=False)]


@dataclass(frozen=True)
class Outcome:
    route: str  # "mvs" | "legacy"
    ok: bool
    latency_ms: float
    error: str | None = None


class Router:
    """Sends each request down the path its flag picks for its session."""

    def __init__(
        self,
        flags: FlagStore,
        mvs: Target,
        legacy: Target | None,
        *,
        service_of: Callable[[str], str | None],
    ) -> None:
        self.flags = flags
        self.mvs = mvs
        self.legacy = legacy
        self.service_of = service_of

    async def send(self, req: CutoverRequest) -> Outcome:
        flag = flag_for(self.service_of(req.agent))
        route = "mvs" if self.flags.enabled(flag, req.session_id) else "legacy"
        target = self.mvs if route == "mvs" else self.legacy
        started = time.perf_counter()
        if target is None:
            return Outcome(route, False, 0.0, f"no legacy path for {req.agent}")
        try:
            reply = await target.send(req.agent, dict(req.envelope))
        except (MvsError, LookupError, ValueError) as exc:
            return Outcome(route, False, (time.perf_counter() - started) * 1000.0, str(exc))
        latency = (time.perf_counter() - started) * 1000.0
        want = status_class(req.expected) if req.expected is not None else "ok"
        if status_class(reply) != want:
            detail = reply.get("error") or reply.get("message") or reply.get("status")
            return Outcome(route, False, latency, f"{req.agent}: {detail}")
        return Outcome(route, True, latency)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[index], 3)


@dataclass
class StepResult:
    percent: int
    requests: int
    to_mvs: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    mvs_p95_ms: float | None
    legacy_p95_ms: float | None
    errors_by_route: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @classmethod
    def of(cls, percent: int, outcomes: list[Outcome]) -> StepResult:
        samples: list[str] = []
        for o in outcomes:
            if o.error and o.error not in samples and len(samples) < 5:
                samples.append(o.error)
        by_route = {r: sum(1 for o in outcomes if o.route == r and not o.ok)
                    for r in ("mvs", "legacy")}
        return cls(
            percent=percent,
            requests=len(outcomes),
            to_mvs=sum(1 for o in outcomes if o.route == "mvs"),
            errors=sum(1 for o in outcomes if not o.ok),
            p50_ms=_pct([o.latency_ms for o in outcomes], 50),
            p95_ms=_pct([o.latency_ms for o in outcomes], 95),
            mvs_p95_ms=_pct([o.latency_ms for o in outcomes if o.route == "mvs"], 95),
            legacy_p95_ms=_pct([o.latency_ms for o in outcomes if o.route == "legacy"], 95),
            errors_by_route=by_route,
            error_samples=samples,
        )


@dataclass
class CutoverReport:
    flags: list[str]
    max_error_rate: float
    steps: list[StepResult] = field(default_factory=list)
    stopped_at: int | None = None
    reason: str = ""
    flags_now: float | None = None

    @property
    def ok(self) -> bool:
        return self.stopped_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "flags": self.flags,
            "max_error_rate": self.max_error_rate,
            "stopped_at": self.stopped_at,
            "reason": self.reason,
            "flags_now": self.flags_now,
            "steps": [
                {"percent": s.percent, "requests": s.requests, "to_mvs": s.to_mvs,
                 "errors": s.errors, "error_rate": round(s.error_rate, 4),
                 "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "mvs_p95_ms": s.mvs_p95_ms,
                 "legacy_p95_ms": s.legacy_p95_ms, "errors_by_route": s.errors_by_route,
                 "error_samples": s.error_samples}
                for s in self.steps
            ],
        }

    def table(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        lines = [f"cutover of {', '.join(self.flags)} (stop above "
                 f"{self.max_error_rate:.1%} errors)",
                 f"{'STEP':>5} {'REQS':>6} {'TO_MVS':>7} {'ERRORS':>7} {'ERR%':>7} "
                 f"{'P50MS':>8} {'P95MS':>8} {'MVS_P95':>8} {'LEG_P95':>8}"]
        for s in self.steps:
            lines.append(f"{s.percent:>4}% {s.requests:>6} {s.to_mvs:>7} {s.errors:>7} "
                         f"{s.error_rate:>7.1%} {f(s.p50_ms):>8} {f(s.p95_ms):>8} "
                         f"{f(s.mvs_p95_ms):>8} {f(s.legacy_p95_ms):>8}")
            lines.extend(f"       error: {e}" for e in s.error_samples)
        if self.ok:
            lines.append("cutover complete: every step within the error budget")
        else:
            lines.append(f"STOPPED at {self.stopped_at}%: {self.reason}")
        if self.flags_now is not None:
            lines.append(f"flags now at {self.flags_now:.0%}")
        return "\n".join(lines)


async def _drive(router: Router, requests: list[CutoverRequest], concurrency: int
                 ) -> list[Outcome]:
    queue = iter(enumerate(requests))
    out: list[Outcome | None] = [None] * len(requests)

    async def worker() -> None:
        for i, req in queue:
            out[i] = await router.send(req)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return [o for o in out if o is not None]


async def run_cutover(
    flags: FlagStore,
    router: Router,
    requests: list[CutoverRequest],
    *,
    flag_names: Sequence[str] = PLAN_FLAGS,
    steps: Sequence[int] = DEFAULT_STEPS,
    max_error_rate: float = 0.05,
    concurrency: int = 4,
    revert: bool = True,
) -> CutoverReport:
    """Step the flags through ``steps`` (percent), driving ``requests`` at each step."""
    if not steps or any(not 0 < p <= 100 for p in steps) or list(steps) != sorted(steps):
        raise ValueError(f"steps must be rising percentages in 1..100, got {list(steps)}")
    if not requests:
        raise ValueError("a cutover step needs at least one request")
    report = CutoverReport(flags=list(flag_names), max_error_rate=max_error_rate)
    good = 0.0
    for percent in steps:
        for name in flag_names:
            await flags.set(name, percent / 100.0, actor="cutover")
        result = StepResult.of(percent, await _drive(router, requests, concurrency))
        report.steps.append(result)
        if result.error_rate > max_error_rate:
            report.stopped_at = percent
            report.reason = (f"error rate {result.error_rate:.1%} > {max_error_rate:.1%} "
                             f"({result.errors_by_route.get('mvs', 0)} on MVS, "
                             f"{result.errors_by_route.get('legacy', 0)} on legacy)")
            if revert:
                for name in flag_names:
                    await flags.set(name, good, actor="cutover-revert")
                report.flags_now = good
            else:
                report.flags_now = percent / 100.0
            return report
        good = percent / 100.0
    report.flags_now = good
    return report
