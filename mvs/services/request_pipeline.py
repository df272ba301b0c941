"""The text request pipeline behind RequestCoordinator: stages, priorities, events.

A request goes through named stages, each timed and recorded as a ``request.stage.v1`` event::

    flags -> [pre stages] -> cache -> classify -> memory -> queue -> llm -> [post stages]

- ``flags``: the plan's feature flags, sticky per session (else user). ``use_mvs_routing`` off
  means the legacy ``local_first`` policy (every task on the local model, no hybrid routing);
  ``use_unified_memory`` off means no memory context from MemoryOrchestratorService.
- ``cache``: a repeated request (same text and token limit) is answered from CacheManager
  (``model_decisions``, 10 min) without touching a model; the route is then ``cache``. The
  cache keeps the model's answer (before post stages), and post stages run on a hit too, so
  a translated request answered from the cache still comes back in the user's language.
- ``classify`` and ``llm``: the hybrid router (:mod:`mvs.llm.router`).
- ``memory``: the memories most similar to the text (semantic search over all memories,
  score >= 0.35) become context for the model.
- ``queue``: model calls are admitted by priority (0 most urgent .. 9), FIFO within one.
- Pre and post stages are where translation and emotion join (:mod:`mvs.services.voice`):
  each is a :class:`Stage` that may rewrite the request state.
- ``metadata.kind`` (``text``, ``audio`` or ``vision``) is the kind the request is recorded
  with; the voice path sends its transcript as ``audio``.

Storing the answer in the cache and the exchange as session memory happens after the reply
is sent, so neither delays the user. Events go out in the background batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import msgspec

from mvs.errors import ServiceCallError
from mvs.flags import FlagStore
from mvs.llm.router import HybridRouter, RoutedResult, classify
from mvs.llm.types import ChatMessage, ChatRequest
from mvs.logs import get_logger
from mvs.services.request_backends import ServiceBackends
from streams.base import Event
from streams.events.requests import (
    RequestCompleted,
    RequestKind,
    RequestReceived,
    RequestRouted,
    RequestStageCompleted,
    Route,
)

__all__ = [
    "FLAG_MEMORY",
    "FLAG_ROUTING",
    "Pipeline",
    "PriorityGate",
    "RequestState",
    "Stage",
    "StageTiming",
    "TextReply",
    "TextRequest",
]

log = get_logger("request_pipeline")

FLAG_ROUTING = "use_mvs_routing"
FLAG_MEMORY = "use_unified_memory"
SYSTEM_PROMPT = "You are a helpful voice assistant. Answer briefly and plainly."
MAX_TEXT = 8000
_KINDS = ("text", "audio", "vision")


class TextRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: str
    session_id: str | None = None
    user_id: str | None = None
    priority: int = 5
    task_type: str | None = None
    max_tokens: int = 96
    use_cache: bool = True
    use_memory: bool = True
    request_id: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class StageTiming(msgspec.Struct, frozen=True, kw_only=True):
    stage: str
    duration_ms: float
    ok: bool = True
    detail: str = ""


class TextReply(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    text: str
    route: Route
    task_type: str
    latency_ms: float
    stages: list[StageTiming]
    fallback_from: Route | None = None
    reason: str = ""
    model: str = ""
    model_ms: float = 0.0  # inside the model call (llama.cpp or the cloud HTTP exchange)
    cached: bool = False
    memories_used: int = 0
    flags: dict[str, bool] = msgspec.field(default_factory=dict)


@dataclass
class RequestState:
    """What the stages share; a stage may change ``text`` (e.g. a translation stage)."""

    request: TextRequest
    request_id: str
    text: str
    started: float
    flags: dict[str, bool] = field(default_factory=dict)
    task_type: str = ""
    context: list[str] = field(default_factory=list)
    answer: str = ""
    model_answer: str = ""  # the answer before post stages (translation): what the cache keeps
    model: str = ""
    route: Route = "none"
    routed: RoutedResult | None = None
    cached: bool = False
    cache_key: str = ""
    stages: list[StageTiming] = field(default_factory=list)


class Stage(Protocol):
    """A pluggable pipeline stage (speech, translation, emotion arrive this way)."""

    name: str

    async def run(self, state: RequestState) -> None: ...


class PriorityGate:
    """Admits at most ``concurrency`` holders; waiters go by priority, then arrival."""

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = concurrency
        self._active = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self._active < self.concurrency and not self._waiters:
            self._active += 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._seq), fut))
            try:
                await fut  # the releaser hands its slot over, so _active stays counted
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()
                else:
                    self._waiters = [w for w in self._waiters if w[2] is not fut]
                    heapq.heapify(self._waiters)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._active -= 1


class Pipeline:
    """Runs :class:`TextRequest` s through the stages; see the module docstring."""

    def __init__(
        self,
        *,
        router: HybridRouter,
        emit: Callable[[Event], None],
        backends: ServiceBackends | None = None,
        flags: FlagStore | None = None,
        gate: PriorityGate | None = None,
        spawn: Callable[[Coroutine[Any, Any, Any]], Any] | None = None,
        source: str = "RequestCoordinator",
        memory_limit: int = 3,
    ) -> None:
        self.router = router
        self.emit = emit
        self.backends = backends
        self.flags = flags
        self.gate = gate or PriorityGate(1)
        self._spawn = spawn or asyncio.ensure_future
        self.source = source
        self.memory_limit = memory_limit
        self.pre_stages: list[Stage] = []
        self.post_stages: list[Stage] = []

    async def handle(self, req: TextRequest) -> TextReply:
        text = req.text.strip()
        if not text:
            raise ValueError("text must not be empty")
        if len(text) > MAX_TEXT:
            raise ValueError(f"text is {len(text)} characters; the limit is {MAX_TEXT}")
        if not 0 <= req.priority <= 9:
            raise ValueError(f"priority must be 0 (most urgent) .. 9, got {req.priority}")
        if not 1 <= req.max_tokens <= 1024:
            raise ValueError(f"max_tokens must be 1..1024, got {req.max_tokens}")
        state = RequestState(
            request=req,
            request_id=req.request_id or f"r-{uuid.uuid4().hex[:16]}",
            text=text,
            started=time.perf_counter(),
        )
        kind = req.metadata.get("kind", "text")
        self._emit(RequestReceived(
            request_id=state.request_id, text=text, session_id=req.session_id,
            kind=cast(RequestKind, kind) if kind in _KINDS else "text",
            user_id=req.user_id, priority=req.priority, task_type=req.task_type,
            metadata=req.metadata,
        ))  # fmt: skip
        try:
            await self._run(state)
        except Exception as exc:
            self._emit(RequestCompleted(
                request_id=state.request_id, outcome="error", route=state.route,
                latency_ms=self._elapsed(state), error=str(exc)[:500],
            ))  # fmt: skip
            raise
        latency = self._elapsed(state)
        self._emit(RequestCompleted(
            request_id=state.request_id, outcome="ok", route=state.route,
            latency_ms=latency, reply_text=state.answer[:2000],
        ))  # fmt: skip
        if not state.cached:
            self._spawn(self._after_reply(state))
        routed = state.routed
        return TextReply(
            request_id=state.request_id,
            text=state.answer,
            route=state.route,
            task_type=state.task_type,
            latency_ms=latency,
            stages=state.stages,
            fallback_from=routed.fallback_from if routed else None,
            reason=routed.reason if routed else "",
            model=state.model,
            model_ms=round(routed.result.model_ms, 3) if routed else 0.0,
            cached=state.cached,
            memories_used=len(state.context),
            flags=state.flags,
        )

    async def _run(self, state: RequestState) -> None:
        req = state.request
        async with self._stage(state, "flags"):
            sticky = req.session_id or req.user_id
            for flag in (FLAG_ROUTING, FLAG_MEMORY):
                state.flags[flag] = self.flags.enabled(flag, sticky) if self.flags else True
        for stage in self.pre_stages:
            async with self._stage(state, stage.name):
                await stage.run(state)
        state.cache_key = f"{req.max_tokens}|{' '.join(state.text.lower().split())}"
        if req.use_cache and self.backends is not None:
            hit = None
            async with self._stage(state, "cache") as mark:
                hit = await self.backends.cache_get(state.cache_key)
                mark("hit" if hit else "miss")
            if hit is not None:
                state.answer, state.model = str(hit.get("text", "")), str(hit.get("model", ""))
                state.task_type = str(hit.get("task_type", ""))
                state.route, state.cached = "cache", True
                state.model_answer = state.answer
                await self._post(state)
                return
        async with self._stage(state, "classify") as mark:
            state.task_type = req.task_type or classify(state.text).task_type
            mark(state.task_type)
        if req.use_memory and state.flags[FLAG_MEMORY] and self.backends is not None:
            async with self._stage(state, "memory") as mark:
                state.context = await self.backends.recall(
                    state.text, req.session_id, self.memory_limit
                )
                mark(f"{len(state.context)} memories")
        chat = self._chat_request(state)
        queued = time.perf_counter()
        async with self.gate.slot(req.priority):
            self._record(state, "queue", (time.perf_counter() - queued) * 1000.0, True, "")
            async with self._stage(state, "llm") as mark:
                if state.flags[FLAG_ROUTING]:
                    routed = await self.router.complete(chat, task_type=state.task_type)
                else:
                    routed = await self._legacy_local(chat, state.task_type)
                mark(f"{routed.route} ({routed.result.model})")
        state.routed, state.route = routed, routed.route
        state.answer, state.model = routed.result.text, routed.result.model
        self._emit(RequestRouted(
            request_id=state.request_id, task_type=state.task_type, route=routed.route,
            reason=routed.reason or routed.decision.rule, fallback_from=routed.fallback_from,
            flags=state.flags,
        ))  # fmt: skip
        state.model_answer = state.answer
        await self._post(state)

    async def _post(self, state: RequestState) -> None:
        for stage in self.post_stages:
            async with self._stage(state, stage.name):
                await stage.run(state)

    async def _legacy_local(self, chat: ChatRequest, task_type: str) -> RoutedResult:
        from mvs.llm.router import Attempt, RouteDecision

        started = time.perf_counter()
        result = await self.router.local.chat(chat)
        ms = (time.perf_counter() - started) * 1000.0
        decision = RouteDecision(task_type, "local_model", None, "legacy local_first")
        return RoutedResult(
            result, decision, "local_model",
            reason=f"{FLAG_ROUTING} off: legacy local-first policy",
            attempts=(Attempt("local_model", True, ms),),
        )  # fmt: skip

    def _chat_request(self, state: RequestState) -> ChatRequest:
        system = SYSTEM_PROMPT
        if state.context:
            remembered = "\n".join(f"- {c[:300]}" for c in state.context)
            system += f"\nThings you remember from earlier:\n{remembered}"
        return ChatRequest(
            messages=[
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=state.text),
            ],
            max_tokens=state.request.max_tokens,
        )

    async def _after_reply(self, state: RequestState) -> None:
        if self.backends is None:
            return
        key = state.cache_key
        if key and state.request.use_cache:
            async with self._stage(state, "cache_store", reraise=False):
                await self.backends.cache_set(key, {
                    "text": state.model_answer, "model": state.model, "task_type": state.task_type,
                })  # fmt: skip
        if state.request.session_id and state.flags.get(FLAG_MEMORY):
            async with self._stage(state, "remember", reraise=False):
                await self.backends.remember(state)

    @contextlib.asynccontextmanager
    async def _stage(
        self, state: RequestState, name: str, *, reraise: bool = True
    ) -> AsyncIterator[Callable[[str], None]]:
        """Time a stage and record it. Cache and memory stages degrade instead of failing."""
        detail: list[str] = []
        started = time.perf_counter()
        ok = True
        try:
            yield detail.append
        except (ServiceCallError, TimeoutError) as exc:
            ok = False
            detail.append(str(exc)[:200])
            if reraise and name not in ("cache", "memory"):
                raise
            log.warning("stage degraded", extra={"stage": name, "error": str(exc)})
        except Exception as exc:
            ok = False
            detail.append(str(exc)[:200])
            if reraise:
                raise
            log.warning("stage failed", extra={"stage": name, "error": str(exc)})
        finally:
            self._record(state, name, (time.perf_counter() - started) * 1000.0, ok,
                         "; ".join(detail))

    def _record(self, state: RequestState, name: str, ms: float, ok: bool, detail: str) -> None:
        state.stages.append(StageTiming(stage=name, duration_ms=round(ms, 3), ok=ok,
                                        detail=detail))
        self._emit(RequestStageCompleted(request_id=state.request_id, stage=name,
                                         duration_ms=round(ms, 3), ok=ok, detail=detail))

    def _emit(self, event: Event) -> None:
        self.emit(msgspec.structs.replace(event, source=self.source))

    @staticmethod
    def _elapsed(state: RequestState) -> float:
        return round((time.perf_counter() - state.started) * 1000.0, 3)
