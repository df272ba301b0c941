"""Task classification and route decisions of the hybrid router (no model needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvs.config import load_config
from mvs.llm.router import ROUTING_CONFIG, HybridRouter, classify, routing_from_plan
from mvs.llm.types import ChatRequest, ChatResult


class Never:
    async def chat(self, request: ChatRequest) -> ChatResult:  # pragma: no cover
        raise AssertionError("routing decisions must not call a model")


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("What is the capital of France?", "simple_qa"),
        ("Write a Python function that reverses a list", "code_generation"),
        ("```\nprint(1)\n```\nwhy does this fail", "code_generation"),
        ("Explain why the sky is blue and compare it with sunsets", "complex_reasoning"),
        ("Turn on the kitchen lights", "command_parse"),
        ("please set a timer for ten minutes", "command_parse"),
        ("remind me to call mum at six", "command_parse"),
        ("Why?", "simple_qa"),
        ("hello there", "simple_qa"),
        (" ".join(["word"] * 45) + " plan", "complex_reasoning"),
    ],
)
def test_classification_follows_the_complexity_table(text: str, task: str) -> None:
    assert classify(text).task_type == task


def test_classification_is_deterministic_and_explains_itself() -> None:
    first = classify("Explain the trade-offs of this design, step by step")
    assert first == classify("Explain the trade-offs of this design, step by step")
    assert first.reason_points >= 6 and any("reasoning words" in r for r in first.reasons)


def test_a_long_command_is_not_a_command() -> None:
    text = "turn on " + " ".join(["the"] * 20) + " lights"
    assert classify(text).task_type == "simple_qa"


def test_routes_follow_the_plans_routing_config() -> None:
    router = HybridRouter(routing_from_plan(ROUTING_CONFIG), local=Never())
    heavy = router.decide("code_generation")
    assert (heavy.target, heavy.fallback, heavy.rule) == ("cloud_api", "local_model", "heavy_tasks")
    assert router.decide("complex_reasoning").target == "cloud_api"
    light = router.decide("command_parse")
    assert (light.target, light.fallback) == ("local_model", None)
    assert router.decide("simple_qa").target == "local_model"
    unknown = router.decide("poetry")
    assert (unknown.target, unknown.rule) == ("local_model", "default")


def test_startup_config_routing_matches_the_plan() -> None:
    routing = load_config("config/mvs_startup_config.yaml").llm_routing
    plan = routing_from_plan(ROUTING_CONFIG)
    assert routing.heavy_tasks == plan.heavy_tasks
    assert routing.light_tasks == plan.light_tasks


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gets_one_of_the_four_task_types_deterministically(text: str) -> None:
    first = classify(text)
    assert first.task_type in {"code_generation", "complex_reasoning", "command_parse", "simple_qa"}
    assert classify(text) == first
