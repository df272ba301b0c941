"""The legacy bridge against real ZeroMQ REP agents on loopback, and a real nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from legacy_agent import LegacyAgent
from logread import stored_events
from prometheus_client import REGISTRY

from mvs.bus import connect
from mvs.errors import CircuitOpen, UpstreamError
from mvs.publisher import EventPublisher
from replay.bridge import LegacyBridge, endpoints_from_configs, legacy_envelope
from streams.base import Event
from streams.definitions import apply_streams
from streams.events.legacy import LegacyBridgeCall
from streams.events.system import BreakerStateChanged


@pytest.fixture
def agent() -> Iterator[LegacyAgent]:
    a = LegacyAgent().start()
    try:
        yield a
    finally:
        a.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_agent_gets_its_own_envelope_with_the_base_fields(agent: LegacyAgent) -> None:
    endpoints = {n: agent.address for n in
                 ("MemoryOrchestratorService", "RequestCoordinator", "TranslationService")}

    async def go() -> list[dict[str, Any]]:
        async with LegacyBridge(endpoints, timeout_s=2.0) as bridge:
            return [
                await bridge.call("MemoryOrchestratorService", "get_memory",
                                  {"data": {"memory_id": "m1"}}),
                await bridge.call("RequestCoordinator", "text",
                                  {"data": "hello", "session_id": "s1"}),
                await bridge.call("TranslationService", None,
                                  {"text": "hola", "target_lang": "en"}),
            ]

    replies = asyncio.run(go())
    assert all(r["status"] == "success" for r in replies)
    memory, coordinator, translation = agent.received
    assert memory["action"] == "get_memory" and memory["data"] == {"memory_id": "m1"}
    assert coordinator["type"] == "text" and "action" not in coordinator
    assert translation["text"] == "hola"
    assert "action" not in translation and "type" not in translation
    for env in agent.received:
        assert env["source_agent"] == "MVSLegacyBridge"
        assert uuid.UUID(env["request_id"]).version == 4
        datetime.fromisoformat(env["timestamp"])
    assert replies[0]["received"] == memory


def test_an_agent_that_dispatches_on_a_key_refuses_a_request_without_one() -> None:
    with pytest.raises(ValueError, match="dispatches on 'action'"):
        legacy_envelope("EmotionEngine", None, {"emotional_cues": {}})


def test_a_down_agent_is_a_clear_error_then_the_breaker_stops_calling_it() -> None:
    down = LegacyAgent()
    down.start()
    address = down.address
    down.close()  # nothing listens on the port any more
    clock = Clock()

    async def go() -> tuple[list[str], str, int]:
        async with LegacyBridge({"EmotionEngine": address}, timeout_s=0.1, retries=1,
                                clock=clock) as bridge:
            errors = []
            for _ in range(5):
                with pytest.raises(UpstreamError) as err:
                    await bridge.call("EmotionEngine", "get_emotional_state")
                errors.append(str(err.value))
            with pytest.raises(CircuitOpen) as refused:
                await bridge.call("EmotionEngine", "get_emotional_state")
            return errors, str(refused.value), bridge.breaker("EmotionEngine").failures

    errors, refused, failures = asyncio.run(go())
    assert errors[0] == (f"legacy agent EmotionEngine at {address} did not answer "
                         "within 0.1 s (2 attempts)")
    assert "circuit to EmotionEngine is open after 5 failures" in refused
    assert failures == 5


def test_the_breaker_closes_again_when_the_agent_comes_back(agent: LegacyAgent) -> None:
    clock = Clock()

    async def go() -> list[str]:
        async with LegacyBridge({"EmotionEngine": agent.address}, timeout_s=0.1, retries=0,
                                clock=clock) as bridge:
            breaker = bridge.breaker("EmotionEngine")
            agent.stop()
            for _ in range(5):
                with pytest.raises(UpstreamError):
                    await bridge.call("EmotionEngine", "get_emotional_state")
            states: list[str] = [breaker.state]
            agent.start()  # same port
            clock.now += 31.0
            for _ in range(3):
                reply = await bridge.call("EmotionEngine", "get_emotional_state")
                assert reply["status"] == "success"
            states.append(breaker.state)
            return states

    assert asyncio.run(go()) == ["open", "closed"]


def test_a_silent_agent_times_out_and_the_next_call_uses_a_fresh_socket(
    agent: LegacyAgent,
) -> None:
    async def go() -> dict[str, Any]:
        async with LegacyBridge({"MemoryOrchestratorService": agent.address}, timeout_s=0.2,
                                retries=0) as bridge:
            agent.silent.set()
            with pytest.raises(UpstreamError, match=r"did not answer within 0\.2 s"):
                await bridge.call("MemoryOrchestratorService", "get_memory", {"data": {}})
            agent.silent.clear()
            await asyncio.to_thread(agent.awake.wait, 5)
            # A REQ socket left waiting would refuse to send (EFSM); the bridge made a new one.
            return await bridge.call("MemoryOrchestratorService", "get_memory",
                                     {"data": {"memory_id": "m2"}})

    reply = asyncio.run(go())
    assert reply["received"]["data"] == {"memory_id": "m2"}


def test_every_call_and_breaker_change_is_recorded_as_an_event(nats_url: str) -> None:
    def handler(env: dict[str, Any]) -> dict[str, Any]:
        if env["action"] == "delete_memory":
            return {"status": "error", "message": "memory m9 not found"}
        return {"status": "success", "memory": {"memory_id": "m1"}}

    good = LegacyAgent(handler).start()
    dead = LegacyAgent()
    dead.start()
    dead.close()

    async def go() -> list[Event]:
        nc = await connect(nats_url)
        js = nc.jetstream()
        await apply_streams(js)
        publisher = EventPublisher(js, batch_timeout_ms=5)
        endpoints = {"MemoryOrchestratorService": good.address, "EmotionEngine": dead.address}
        async with LegacyBridge(endpoints, timeout_s=0.1, retries=0, failure_threshold=1,
                                emit=publisher.emit) as bridge:
            await bridge.call("MemoryOrchestratorService", "get_memory", {"data": {}},
                              correlation_id="corr-1")
            error_reply = await bridge.call("MemoryOrchestratorService", "delete_memory",
                                            {"data": {"memory_id": "m9"}})
            assert error_reply["status"] == "error"
            with pytest.raises(UpstreamError):
                await bridge.call("EmotionEngine", "get_emotional_state")
            with pytest.raises(CircuitOpen):
                await bridge.call("EmotionEngine", "get_emotional_state")
        await publisher.close()
        events = await stored_events(js)
        await nc.close()
        return events

    def count(agent: str, outcome: str) -> float:
        return REGISTRY.get_sample_value("mvs_legacy_bridge_calls_total",
                                         {"agent": agent, "outcome": outcome}) or 0.0

    outcomes = [("MemoryOrchestratorService", "ok"), ("MemoryOrchestratorService", "error_reply"),
                ("EmotionEngine", "timeout"), ("EmotionEngine", "refused")]
    before = [count(*o) for o in outcomes]
    try:
        events = asyncio.run(go())
    finally:
        good.close()
    assert [count(*o) - b for o, b in zip(outcomes, before, strict=True)] == [1, 1, 1, 1]
    calls = [e for e in events if isinstance(e, LegacyBridgeCall)]
    assert [(c.agent, c.action, c.ok) for c in calls] == [
        ("MemoryOrchestratorService", "get_memory", True),
        ("MemoryOrchestratorService", "delete_memory", False),
        ("EmotionEngine", "get_emotional_state", False),
        ("EmotionEngine", "get_emotional_state", False),
    ]
    assert calls[0].correlation_id == "corr-1"
    assert calls[1].error == "memory m9 not found"
    assert calls[2].error is not None and "did not answer" in calls[2].error
    assert calls[3].error is not None and calls[3].error.startswith("circuit open")
    changes = [e for e in events if isinstance(e, BreakerStateChanged)]
    assert [(c.dependency, c.to_state) for c in changes] == [("EmotionEngine", "open")]


def test_endpoints_come_from_the_real_legacy_startup_configs(legacy_samples: Path) -> None:
    configs = sorted((legacy_samples / "configs").glob("*.yaml"))
    endpoints = endpoints_from_configs(configs, hosts={"pc2": "10.0.0.2"})
    # The ports FORMATS.md L11 names, on the host each agent ran on.
    assert endpoints["MemoryOrchestratorService"] == "tcp://10.0.0.2:7140"
    assert endpoints["AsyncProcessor"] == "tcp://10.0.0.2:7101"
    assert endpoints["RequestCoordinator"] == "tcp://127.0.0.1:26002"
    assert endpoints["TranslationService"] == "tcp://127.0.0.1:5595"
    assert endpoints["EmotionEngine"] == "tcp://127.0.0.1:5590"


def test_a_call_cancelled_mid_exchange_leaves_the_bridge_usable(agent: LegacyAgent) -> None:
    async def go() -> dict[str, Any]:
        async with LegacyBridge({"EmotionEngine": agent.address}, timeout_s=5.0,
                                retries=0) as bridge:
            agent.silent.set()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(bridge.call("EmotionEngine", "get_emotional_state"), 0.2)
            agent.silent.clear()
            await asyncio.to_thread(agent.awake.wait, 5)
            return await bridge.call("EmotionEngine", "get_emotional_state")

    assert asyncio.run(go())["status"] == "success"
