"""ModelManagerSuite: the model pool as a service (load, unload, status, generate, embed).

It runs in the ``models`` process group, the one process that imports llama.cpp and torch,
so every model of the host shares one pool and one memory budget. The pool's settings come
from ``resource_pool`` in the startup config; its events (``model.*``) go out in the
background batch, so a load never waits for the event log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import msgspec

from mvs.errors import ModelError
from mvs.llm.local import PoolChat
from mvs.llm.types import ChatRequest, ChatResult
from mvs.models.backends import DEFAULT_MODELS, ModelSpec
from mvs.models.embedding import EmbeddingModel
from mvs.models.pool import ModelPool, ModelStatus, PoolConfig, PoolStatus
from mvs.rpc import Empty
from mvs.service import Service, ServiceContext, endpoint
from streams.base import Event

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "EmbedReply",
    "EmbedRequest",
    "ModelManagerSuite",
    "ModelRef",
    "UnloadReply",
]

DEFAULT_EMBEDDING_MODEL = "minilm-l6-v2"


class ModelRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model_id: str


class UnloadReply(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    unloaded: bool


class EmbedRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    texts: list[str]
    model_id: str = DEFAULT_EMBEDDING_MODEL


class EmbedReply(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    dimension: int
    vectors: list[list[float]]
    model_ms: float = 0.0


class ModelManagerSuite(Service):
    """The model pool: at most N models resident, LRU eviction, idle unload, events."""

    name = "ModelManagerSuite"

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        specs: Iterable[ModelSpec] = DEFAULT_MODELS,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        cfg = ctx.config
        pool_cfg = PoolConfig()
        self.default_llm = DEFAULT_MODELS[0].model_id
        if cfg is not None:
            rp = cfg.resource_pool
            pool_cfg = PoolConfig(
                max_models_in_memory=rp.max_models_in_memory,
                model_idle_timeout=rp.model_idle_timeout,
                memory_budget_mb=float(rp.memory_budget_mb),
                preload_models=rp.preload_models,
            )
            self.default_llm = cfg.llm_routing.local_model
        self.pool = ModelPool(
            specs, config=pool_cfg, emit=self._emit, host=ctx.host, source=self.name
        )
        ctx.extras["model_pool"] = self.pool  # STT/TTS/translation of this process share it

    async def _emit(self, event: Event) -> None:
        self.ctx.events.emit(event)

    async def on_start(self) -> None:
        self.spawn(self._preload(), name="ModelManagerSuite-preload")
        self.spawn(self.pool.run_reaper(10.0), name="ModelManagerSuite-reaper")

    async def _preload(self) -> None:
        loaded = await self.pool.preload()
        self.log.info("preloaded models", extra={"models": loaded})

    async def on_stop(self) -> None:
        await self.pool.close()

    async def check_health(self) -> dict[str, str]:
        status = self.pool.status()
        if status.memory_used_mb > status.memory_budget_mb:
            return {"pool": f"over budget: {status.memory_used_mb:.0f} MB"}
        return {"pool": "ok"}

    @endpoint("status", request=Empty, reply=PoolStatus, record=False)
    async def status(self, req: Empty) -> PoolStatus:
        return self.pool.status()

    @endpoint("load", request=ModelRef, reply=ModelStatus)
    async def load(self, req: ModelRef) -> ModelStatus:
        return await self.pool.load(req.model_id)

    @endpoint("unload", request=ModelRef, reply=UnloadReply)
    async def unload(self, req: ModelRef) -> UnloadReply:
        self.pool.model_status(req.model_id)  # an unknown id is a 404, not "not resident"
        return UnloadReply(model_id=req.model_id, unloaded=await self.pool.unload(req.model_id))

    @endpoint("generate", request=ChatRequest, reply=ChatResult)
    async def generate(self, req: ChatRequest) -> ChatResult:
        if not req.messages:
            raise ValueError("generate needs at least one message")
        return await PoolChat(self.pool, self.default_llm).chat(req)

    @endpoint("embed", request=EmbedRequest, reply=EmbedReply)
    async def embed(self, req: EmbedRequest) -> EmbedReply:
        if len(req.texts) > 256:
            raise ValueError(f"embed takes at most 256 texts per request, got {len(req.texts)}")
        async with self.pool.use(req.model_id) as model:
            if not isinstance(model, EmbeddingModel):
                raise ModelError(f"model {req.model_id!r} is not an embedding model")
            vectors = await asyncio.to_thread(model.embed, req.texts)
            return EmbedReply(
                model=req.model_id,
                dimension=model.dimension,
                vectors=vectors,
                model_ms=round(model.last_ms, 3),
            )
