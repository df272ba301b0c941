"""The model pool with real models: LRU eviction, memory budget, idle unload, events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from mvs.bus import connect, jetstream
from mvs.errors import ModelError
from mvs.llm.types import ChatMessage, ChatRequest
from mvs.models.backends import DEFAULT_MODELS, ModelSpec, load_model, package_dir
from mvs.models.embedding import EmbeddingModel
from mvs.models.llama import LlamaChatModel
from mvs.models.pool import ModelPool, PoolConfig
from streams.base import Event
from streams.catalog import decode_event, encode_event, subject_of
from streams.definitions import apply_streams
from streams.events.models import ModelEvicted, ModelLoaded, ModelLoadFailed, ModelUnloaded

LLM = DEFAULT_MODELS[0]
# One small GGUF under several ids: four real llama.cpp loads to fill a pool of three.
COPIES = [
    msgspec.structs.replace(LLM, model_id=f"llm-{i}", options={"n_ctx": 256, "warmup": False})
    for i in range(4)
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def collecting() -> tuple[list[Event], object]:
    seen: list[Event] = []

    async def emit(event: Event) -> None:
        seen.append(event)

    return seen, emit


def test_llama_backend_answers_a_chat_deterministically() -> None:
    model = load_model(msgspec.structs.replace(LLM, options={"n_ctx": 512}))
    assert isinstance(model, LlamaChatModel)
    try:
        req = ChatRequest(
            messages=[ChatMessage(role="user", content="Name a colour.")], max_tokens=8
        )
        first, second = model.chat(req), model.chat(req)
        assert first.text and first.text == second.text
        assert first.completion_tokens > 0 and first.model == LLM.model_id
    finally:
        model.close()


def test_minilm_embeddings_are_normalised_and_semantic() -> None:
    model = load_model(DEFAULT_MODELS[1])
    assert isinstance(model, EmbeddingModel)
    try:
        a, b, c = model.embed(["the cat sat on the mat", "a cat is sitting on a rug", "tax law"])
        assert len(a) == model.dimension == 384
        assert abs(sum(x * x for x in a) - 1.0) < 1e-4

        def dot(u: list[float], v: list[float]) -> float:
            return sum(x * y for x, y in zip(u, v, strict=True))

        assert dot(a, b) > dot(a, c) + 0.2
    finally:
        model.close()


def test_missing_model_package_or_file_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="not installed"):
        package_dir("no_such_model_package_xyz")
    bad = msgspec.structs.replace(LLM, model_id="ghost", path="nope.gguf")
    with pytest.raises(ModelError, match=r"ghost.*does not exist"):
        load_model(bad)
    with pytest.raises(ModelError, match="unknown backend"):
        load_model(msgspec.structs.replace(LLM, backend="tensorrt"))


def test_fourth_model_evicts_the_least_recently_used() -> None:
    seen, emit = collecting()
    clock = Clock()
    pool = ModelPool(COPIES, config=PoolConfig(memory_budget_mb=10_000), emit=emit, clock=clock)  # type: ignore[arg-type]

    async def main() -> None:
        for i in range(3):
            clock.now += 1
            await pool.load(f"llm-{i}")
        clock.now += 1
        async with pool.use("llm-0"):  # llm-0 is now the most recently used
            pass
        clock.now += 1
        await pool.load("llm-3")
        assert sorted(pool.resident()) == ["llm-0", "llm-2", "llm-3"]
        await pool.close()

    asyncio.run(main())
    loads = [e for e in seen if isinstance(e, ModelLoaded)]
    assert [e.model_id for e in loads] == ["llm-0", "llm-1", "llm-2", "llm-3"]
    assert all(e.memory_mb > 0 and e.load_ms > 0 and e.backend == "llama_cpp" for e in loads)
    evicted = [e for e in seen if isinstance(e, ModelEvicted)]
    assert [(e.model_id, e.to_make_room_for) for e in evicted] == [("llm-1", "llm-3")]
    shutdown = [e.model_id for e in seen if isinstance(e, ModelUnloaded)]
    assert sorted(shutdown) == ["llm-0", "llm-2", "llm-3"]
    assert all(e.source == "model_manager" for e in seen)


def test_memory_budget_evicts_before_the_count_limit() -> None:
    seen, emit = collecting()
    # Estimates count until a model has been loaded once; then its measured size does.
    specs = [
        COPIES[0],
        COPIES[1],
        msgspec.structs.replace(COPIES[2], memory_mb=800.0),
        msgspec.structs.replace(COPIES[3], memory_mb=5000.0),
    ]
    pool = ModelPool(specs, config=PoolConfig(memory_budget_mb=900.0), emit=emit)  # type: ignore[arg-type]

    async def main() -> None:
        await pool.load("llm-0")
        await pool.load("llm-1")
        await pool.load("llm-2")
        assert "llm-2" in pool.resident() and "llm-0" not in pool.resident()
        assert len(pool.resident()) < 3
        with pytest.raises(ModelError, match="whole memory budget"):
            await pool.load("llm-3")
        await pool.close()

    asyncio.run(main())
    evicted = [e for e in seen if isinstance(e, ModelEvicted)]
    assert evicted[0].model_id == "llm-0" and evicted[0].to_make_room_for == "llm-2"
    failed = [e for e in seen if isinstance(e, ModelLoadFailed)]
    assert [e.model_id for e in failed] == ["llm-3"]


def test_borrowed_models_are_never_evicted() -> None:
    pool = ModelPool(COPIES[:2], config=PoolConfig(max_models_in_memory=1))

    async def main() -> None:
        async with pool.use("llm-0"):
            with pytest.raises(ModelError, match="all in use"):
                await pool.load("llm-1")
            with pytest.raises(ModelError, match="in use"):
                await pool.unload("llm-0")
        await pool.load("llm-1")
        assert pool.resident() == ["llm-1"]
        await pool.close()

    asyncio.run(main())


def test_idle_models_unload_after_the_timeout_but_preloaded_stay() -> None:
    seen, emit = collecting()
    clock = Clock()
    config = PoolConfig(model_idle_timeout=300.0, preload_models=("llm-0",))
    pool = ModelPool(COPIES[:2], config=config, emit=emit, clock=clock)  # type: ignore[arg-type]

    async def main() -> None:
        assert await pool.preload() == ["llm-0"]
        async with pool.use("llm-1") as model:
            assert isinstance(model, LlamaChatModel)
        clock.now += 299.0
        assert await pool.reap_idle() == []
        clock.now += 1.0
        assert await pool.reap_idle() == ["llm-1"]
        assert pool.resident() == ["llm-0"]
        status = pool.status()
        assert [m.loaded for m in status.models] == [True, False]
        assert status.models[0].preloaded and status.models[1].loads == 1
        await pool.close()

    asyncio.run(main())
    idle = [e for e in seen if isinstance(e, ModelUnloaded) and e.reason == "idle"]
    assert [(e.model_id, e.idle_s) for e in idle] == [("llm-1", 300.0)]


def test_failed_load_is_an_event_and_the_pool_keeps_working(tmp_path: Path) -> None:
    seen, emit = collecting()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    bad = ModelSpec(model_id="broken", kind="llm", backend="llama_cpp", path=str(broken))
    pool = ModelPool([bad, COPIES[0]], emit=emit)  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(ModelError, match="broken"):
            await pool.load("broken")
        with pytest.raises(ModelError, match="unknown model"):
            await pool.load("nonexistent")
        await pool.load("llm-0")
        await pool.close()

    asyncio.run(main())
    assert [type(e) for e in seen] == [ModelLoadFailed, ModelLoaded, ModelUnloaded]


def test_pool_events_land_in_the_event_log(nats_url: str) -> None:
    async def main() -> list[Event]:
        nc = await connect(nats_url)
        js = jetstream(nc)
        await apply_streams(js)

        async def emit(event: Event) -> None:
            await js.publish(
                subject_of(event), encode_event(event), headers={"Nats-Msg-Id": event.event_id}
            )

        pool = ModelPool(COPIES[:1], emit=emit)
        await pool.load("llm-0")
        await pool.unload("llm-0")
        sub = await js.subscribe("mvs.evt.model.>", ordered_consumer=True)
        events = [decode_event((await sub.next_msg(timeout=5)).data) for _ in range(2)]
        await nc.close()
        return events

    loaded, unloaded = asyncio.run(main())
    assert isinstance(loaded, ModelLoaded) and loaded.model_id == "llm-0"
    assert isinstance(unloaded, ModelUnloaded) and unloaded.reason == "requested"
