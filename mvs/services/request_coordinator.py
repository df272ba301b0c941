"""RequestCoordinator: the front door for text and spoken requests.

Endpoints:

- ``text`` (:class:`~mvs.services.request_pipeline.TextRequest` -> ``TextReply``): the
  pipeline of :mod:`mvs.services.request_pipeline` (flags, cache, classification, memory,
  priority queue, hybrid LLM routing).
- ``audio`` (:class:`~mvs.services.voice.AudioRequest` -> ``AudioReply``): the voice path
  of :mod:`mvs.services.voice` (STT, translation, emotion, this pipeline, TTS).
- ``legacy``: the legacy wire format (``{"type": "text", "data": ..., "session_id",
  "user_id", "metadata": {"urgency"}}`` answered by ``{"status": "success", "response"}``;
  ``{"type": "audio", "audio_data": <base64 WAV>}`` goes the voice path), so that legacy
  callers and the shadow replayer can talk to MVS unchanged.
- ``route``: which task type and route a text would get, without running a model.

The local model is reached through ModelManagerSuite (another process may hold it); the
cloud endpoint through the ``cloud_api`` circuit breaker of this service.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from mvs.flags import FlagStore
from mvs.llm.cloud import CloudChatClient
from mvs.llm.local import RemoteChat
from mvs.llm.router import CLOUD_DEPENDENCY, ChatBackend, HybridRouter, classify, routing_from_plan
from mvs.rpc import ServiceClient
from mvs.service import Service, ServiceContext, endpoint
from mvs.services.request_backends import ServiceBackends
from mvs.services.request_pipeline import Pipeline, PriorityGate, TextReply, TextRequest
from mvs.services.voice import AudioReply, AudioRequest, VoicePipeline, from_legacy, install

__all__ = ["LegacyReply", "LegacyRequest", "RequestCoordinator", "RouteInfo", "RouteQuery"]

_URGENCY = {"critical": 0, "high": 1, "urgent": 1, "normal": 5, "medium": 5, "low": 8}


class LegacyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The legacy RequestCoordinator message (port 26002); unknown fields are tolerated."""

    type: Literal["text", "audio", "vision"] = "text"
    data: str | None = None
    audio_data: str | None = None  # base64 WAV (or PCM16 with metadata.format) for "audio"
    context: Any = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    user_id: str | None = None
    session_id: str | None = None
    request_id: str | None = None


class LegacyReply(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    response: str = ""
    route: str = ""
    request_id: str = ""
    error: str | None = None
    transcript: str | None = None  # what was heard, for an audio request


class RouteQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: str
    task_type: str | None = None


class RouteInfo(msgspec.Struct, frozen=True, kw_only=True):
    task_type: str
    target: str
    fallback: str | None
    rule: str
    reasons: list[str]


class RequestCoordinator(Service):
    """Text requests through flags, cache, memory, priorities and the hybrid LLM router."""

    name = "RequestCoordinator"

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        local: ChatBackend | None = None,
        cloud: ChatBackend | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        self._local = local
        self._cloud = cloud
        self._own_flags: FlagStore | None = None

    async def on_start(self) -> None:
        cfg = self.ctx.config
        routing = cfg.llm_routing if cfg is not None else routing_from_plan()
        client = ServiceClient(self.ctx.nc)
        local = self._local or RemoteChat(client, routing.local_model)
        cloud = self._cloud
        api = routing.cloud_api
        if cloud is None and api.base_url:
            # mvs.settings reads the environment; the runner passes its Settings in extras.
            settings = self.ctx.extras.get("settings")
            keys: dict[str, str] = getattr(settings, "api_keys", {})
            key = keys.get(api.api_key_env)
            cloud = CloudChatClient(
                api.base_url, model=api.model, api_key=key, timeout_s=api.timeout_s
            )
        self.router = HybridRouter(
            routing, local=local, cloud=cloud, breaker=self.breaker(CLOUD_DEPENDENCY)
        )
        flags = self.ctx.flags
        if flags is None and cfg is not None and cfg.feature_flags:
            self._own_flags = flags = await FlagStore.open(
                self.ctx.js,
                events=self.ctx.events,
                defaults={name: f.fraction for name, f in cfg.feature_flags.items()},
            )
        self.pipeline = Pipeline(
            router=self.router,
            emit=self.ctx.events.emit,
            backends=ServiceBackends(client),
            flags=flags,
            gate=PriorityGate(2),
            spawn=self.spawn,
            source=self.name,
        )
        # Translation and emotion join as pipeline stages; the voice path hands its transcript
        # to this pipeline in-process rather than back over NATS to this very service.
        install(self.pipeline, client)
        self.voice = VoicePipeline(client, text_handler=self.pipeline.handle)

    async def on_stop(self) -> None:
        if self._own_flags is not None:
            await self._own_flags.stop()

    async def check_health(self) -> dict[str, str]:
        waiting = self.pipeline.gate.waiting
        return {"queue": "ok" if waiting < 100 else f"{waiting} requests waiting"}

    @endpoint("text", request=TextRequest, reply=TextReply, concurrency=32)
    async def text(self, req: TextRequest) -> TextReply:
        return await self.pipeline.handle(req)

    @endpoint("audio", request=AudioRequest, reply=AudioReply, concurrency=8)
    async def audio(self, req: AudioRequest) -> AudioReply:
        return await self.voice.handle(req)

    @endpoint("legacy", request=LegacyRequest, reply=LegacyReply, concurrency=32)
    async def legacy(self, req: LegacyRequest) -> LegacyReply:
        if req.type == "audio":
            return await self._legacy_audio(req)
        if req.type != "text":
            return LegacyReply(
                status="error",
                error=f"{req.type} requests need the vision service (not part of MVS yet)",
            )
        if not req.data:
            return LegacyReply(status="error", error="a text request needs 'data'")
        urgency = str(req.metadata.get("urgency", "normal")).lower()
        reply = await self.pipeline.handle(
            TextRequest(
                text=req.data,
                session_id=req.session_id,
                user_id=req.user_id,
                priority=_URGENCY.get(urgency, 5),
                request_id=req.request_id,
            )
        )
        return LegacyReply(
            status="success", response=reply.text, route=reply.route, request_id=reply.request_id
        )

    async def _legacy_audio(self, req: LegacyRequest) -> LegacyReply:
        if not req.audio_data:
            return LegacyReply(status="error", error="an audio request needs 'audio_data'")
        try:
            audio = from_legacy(
                req.audio_data, session_id=req.session_id, user_id=req.user_id,
                metadata=req.metadata,
            )  # fmt: skip
        except ValueError as exc:
            return LegacyReply(status="error", error=str(exc))
        # the legacy reply carries text only, so nothing is spoken for it
        audio = msgspec.structs.replace(audio, speak=False, request_id=req.request_id)
        reply = await self.voice.handle(audio)
        return LegacyReply(
            status="success", response=reply.text, route=reply.route,
            request_id=reply.request_id, transcript=reply.transcript,
        )  # fmt: skip

    @endpoint("route", request=RouteQuery, reply=RouteInfo, record=False)
    async def route(self, req: RouteQuery) -> RouteInfo:
        found = classify(req.text)
        task = req.task_type or found.task_type
        decision = self.router.decide(task)
        return RouteInfo(
            task_type=task,
            target=decision.target,
            fallback=decision.fallback,
            rule=decision.rule,
            reasons=list(found.reasons),
        )
