"""Shadow replay: comparators, and traces replayed against the real ServiceRegistry and against
a real ZeroMQ legacy agent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from legacy_agent import LegacyAgent

from mvs.cli import main
from mvs.config import load_config
from mvs.service import ServiceContext
from mvs.services.registry import AgentList, AgentListRequest, ServiceRegistry
from replay.bridge import LegacyBridge
from replay.compare import Exact, Tolerant, comparator_for
from replay.shadow import LegacyTarget, MvsTarget, read_trace, route_request, run_shadow
from streams.definitions import apply_streams

CONFIG = Path(__file__).resolve().parents[1] / "config" / "mvs_startup_config.yaml"


def _write_trace(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _line(agent: str, request: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    return {"time": "2025-06-18T17:33:32Z", "agent": agent, "request": request, "reply": reply,
            "latency_ms": 3.5}


def test_exact_comparison_names_each_differing_field() -> None:
    expected = {"status": "success", "message": "found",
                "memory": {"memory_id": "m1", "content": "tea", "importance": 0.5,
                           "access_count": 3, "tags": ["a", "b"]}}
    actual = {"status": "ok", "memory": {"memory_id": "m1", "content": "coffee",
                                         "importance": 0.5 + 1e-12, "access_count": 9,
                                         "tags": ["a"], "extra": True}}
    diff = comparator_for("get_memory").compare(expected, actual)
    assert diff == ["memory.content: expected 'tea', got 'coffee'",
                    "memory.tags: expected 2 items, got 1"]
    assert Exact().compare({"status": "error", "error": "gone"}, {"status": "success"}) == [
        "status: expected error, got ok"]


def test_model_output_is_compared_tolerantly() -> None:
    legacy = {"status": "success", "response": "Paris is the capital of France."}
    assert comparator_for("text").compare(legacy, {"status": "success", "response": "Paris."}) == []
    assert comparator_for("text").compare(legacy, {"status": "success", "response": " "}) == [
        "output: empty, expected text like 'Paris is the capital of France.'"]
    strict = Tolerant(min_similarity=0.9)
    [diff] = strict.compare(legacy, {"status": "success", "response": "Lyon."})
    assert diff.startswith("output: similarity 0.")
    # A translation served from the legacy cache is deterministic: exact.
    cached = {"status": "success", "translation": "kumusta", "cached": True}
    assert isinstance(comparator_for("translate", expected=cached), Exact)
    assert comparator_for("translate", expected=cached).compare(
        cached, {"status": "success", "translation": "hello", "cached": True}
    ) == ["translation: expected 'kumusta', got 'hello'"]


def test_a_bad_trace_line_is_reported_with_its_number(tmp_path: Path) -> None:
    trace = _write_trace(tmp_path / "t.jsonl", [
        _line("X", {"action": "a"}, {"status": "ok"}), "{not json", '{"agent": "X"}'])
    got = list(read_trace(trace))
    assert got[0][0] == 1 and not isinstance(got[0][1], str)
    assert got[1][0] == 2 and "not a trace record" in str(got[1][1])
    assert got[2][0] == 3 and "missing required field" in str(got[2][1])


def _registry_trace(path: Path, reply: dict[str, Any]) -> Path:
    wrong = json.loads(json.dumps(reply))
    wrong["legacy_agents"]["emotionengine"] = "EmotionEngine"
    return _write_trace(path, [
        _line("ServiceRegistry", {"action": "list_agents", "request_id": "r1",
                                  "source_agent": "CLI", "timestamp": "2025-06-18T17:33:32"},
              reply),
        _line("ServiceRegistry", {"action": "list_agents"}, wrong),
        _line("MemoryOrchestratorService", {"action": "get_memory",
                                            "data": {"memory_id": "mem-1"}},
              {"status": "success", "memory": {"memory_id": "mem-1"}}),
        "garbage",
    ])


def test_trace_replayed_against_the_real_service_registry(
    tmp_path: Path, nats_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = load_config(CONFIG)
    mapping = {a: name for name, spec in cfg.services.items() for a in spec.legacy_agents}

    async def go() -> tuple[Any, dict[str, Any]]:
        ctx = await ServiceContext.connect(nats_url, config=cfg)
        await apply_streams(ctx.js)
        registry = ServiceRegistry(ctx)
        await registry.start()
        try:
            from mvs.rpc import ServiceClient

            now = await ServiceClient(ctx.nc).call("ServiceRegistry", "list_agents",
                                                   AgentListRequest(), AgentList)
            reply = {"status": now.status, "agents": now.agents,
                     "legacy_agents": now.legacy_agents}
            trace = _registry_trace(tmp_path / "trace.jsonl", reply)
            report = await run_shadow(trace, MvsTarget(ctx.nc, mapping, timeout_s=2.0))
            monkeypatch.setenv("MVS_NATS_URL", nats_url)
            monkeypatch.setenv("MVS_CONFIG", str(CONFIG))
            monkeypatch.setenv("MVS_HOME", str(tmp_path / "home"))
            code = await asyncio.to_thread(main, ["shadow", str(trace), "--json"])
            return report, {"code": code}
        finally:
            await registry.stop()
            await ctx.close()

    report, cli = asyncio.run(go())
    stats = report.actions
    assert stats["ServiceRegistry.list_agents"].total == 2
    assert stats["ServiceRegistry.list_agents"].matched == 1
    assert stats["ServiceRegistry.list_agents"].mismatched == 1
    assert stats["ServiceRegistry.list_agents"].comparator == "exact"
    assert stats["MemoryOrchestratorService.get_memory"].failed == 1
    diffs = {m.line: m.diff for m in report.mismatches}
    assert diffs[2] == ["legacy_agents.emotionengine: expected 'EmotionEngine', "
                        "got 'EmotionService'"]
    assert "no responder on mvs.svc.MemoryOrchestratorService.get" in diffs[3][0]
    assert report.rejected_lines[0][0] == 4
    assert not report.ok
    assert cli["code"] == 2
    out = json.loads(capsys.readouterr().out)
    assert out["actions"]["ServiceRegistry.list_agents"]["matched"] == 1
    assert [m["line"] for m in out["mismatches"]] == [2, 3]


def test_trace_replayed_against_a_legacy_agent_matches_until_its_answers_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    memories = {"mem-1": {"memory_id": "mem-1", "content": "tea", "importance": 0.7}}

    def handler(env: dict[str, Any]) -> dict[str, Any]:
        if env.get("action") == "get_memory":
            found = memories.get(env["data"]["memory_id"])
            if found is None:
                return {"status": "error", "message": "not found"}
            return {"status": "success", "memory": dict(found), "request_id": env["request_id"]}
        return {"status": "success", "response": f"echo {env.get('data')}"}

    agent = LegacyAgent(handler).start()
    try:
        trace = _write_trace(tmp_path / "t.jsonl", [
            _line("MemoryOrchestratorService",
                  {"action": "get_memory", "data": {"memory_id": "mem-1"}},
                  {"status": "success", "memory": memories["mem-1"], "request_id": "old"}),
            _line("MemoryOrchestratorService",
                  {"action": "get_memory", "data": {"memory_id": "nope"}},
                  {"status": "error", "message": "not found"}),
            _line("RequestCoordinator", {"type": "text", "data": "hi", "session_id": "s"},
                  {"status": "success", "response": "hello there"}),
        ])
        endpoints = {"MemoryOrchestratorService": agent.address,
                     "RequestCoordinator": agent.address}

        async def replay() -> Any:
            async with LegacyBridge(endpoints, timeout_s=2.0) as bridge:
                return await run_shadow(trace, LegacyTarget(bridge))

        clean = asyncio.run(replay())
        assert clean.ok and clean.total == 3
        assert clean.actions["RequestCoordinator.text"].comparator == "tolerant"

        memories["mem-1"]["content"] = "coffee"
        changed = asyncio.run(replay())
        assert [m.diff for m in changed.mismatches] == [
            ["memory.content: expected 'tea', got 'coffee'"]]

        args = ["shadow", str(trace), "--target", "legacy"]
        for agent_name, address in endpoints.items():
            args += ["--legacy", f"{agent_name}={address}"]
        assert main(args) == 2
        assert "memory.content: expected 'tea', got 'coffee'" in capsys.readouterr().out
    finally:
        agent.close()


def test_legacy_envelopes_are_routed_to_mvs_service_requests() -> None:
    cfg = load_config(CONFIG)
    mapping = {a: name for name, spec in cfg.services.items() for a in spec.legacy_agents}
    base = {"source_agent": "X", "request_id": "r", "timestamp": "t"}
    assert route_request("SessionMemoryAgent",
                         {"action": "get_memory", "data": {"memory_id": "m1"}, **base},
                         mapping) == ("MemoryOrchestratorService", "get", {"memory_id": "m1"})
    assert route_request("MemoryClient", {"action": "create", "payload": {"content": "c"}},
                         mapping) == ("MemoryOrchestratorService", "add", {"content": "c"})
    coordinator = {"type": "text", "data": "hi", "session_id": "s", **base}
    assert route_request("RequestCoordinator", coordinator, mapping) == (
        "RequestCoordinator", "legacy", coordinator)
    assert route_request("ServiceRegistry", {"action": "get_agent_endpoint",
                                             "agent_name": "EmotionEngine", **base}, mapping) == (
        "ServiceRegistry", "get_agent_endpoint", {"agent_name": "EmotionEngine"})
    assert route_request("NLLBAdapter", {"action": "translate", "text": "hola",
                                         "target_lang": "en"}, mapping)[:2] == (
        "TranslationService", "translate")
    with pytest.raises(LookupError, match="legacy agent Nobody has no MVS service"):
        route_request("Nobody", {"action": "x"}, mapping)


def test_the_bridge_records_a_trace_that_replays_clean_against_the_same_agent(
    tmp_path: Path,
) -> None:
    def handler(env: dict[str, Any]) -> dict[str, Any]:
        if env.get("action") == "get_emotional_state":
            return {"status": "success", "emotion": "calm", "intensity": 0.25,
                    "request_id": env["request_id"]}
        return {"status": "error", "error": f"unknown action {env.get('action')}"}

    agent = LegacyAgent(handler).start()
    trace = tmp_path / "recorded.jsonl"
    try:
        async def record_then_replay() -> Any:
            async with LegacyBridge({"EmotionEngine": agent.address}, timeout_s=2.0,
                                    trace=trace) as bridge:
                await bridge.call("EmotionEngine", "get_emotional_state", {"session_id": "s"})
                await bridge.call("EmotionEngine", "dance")
            async with LegacyBridge({"EmotionEngine": agent.address}, timeout_s=2.0) as bridge:
                return await run_shadow(trace, LegacyTarget(bridge))

        report = asyncio.run(record_then_replay())
    finally:
        agent.close()
    records = [r for _, r in read_trace(trace)]
    assert [r.request["action"] for r in records if not isinstance(r, str)] == [
        "get_emotional_state", "dance"]
    assert report.ok and report.total == 2
    assert report.actions["EmotionEngine.get_emotional_state"].comparator == "exact"
