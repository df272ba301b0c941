"""Cutover steps against a real nats-server, real flags, the real ServiceRegistry on the MVS
side and a real ZeroMQ legacy agent on the other."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from legacy_agent import LegacyAgent

from mvs.cli import main
from mvs.config import load_config
from mvs.flags import FlagStore
from mvs.publisher import EventPublisher
from mvs.service import ServiceContext
from mvs.services.registry import ServiceRegistry
from replay.bridge import LegacyBridge
from replay.cutover import (
    CutoverReport,
    Router,
    generated_requests,
    run_cutover,
)
from replay.shadow import LegacyTarget, MvsTarget
from streams.definitions import apply_streams

CONFIG = Path(__file__).resolve().parents[1] / "config" / "mvs_startup_config.yaml"
CFG = load_config(CONFIG)
SERVICES = {a: name for name, spec in CFG.services.items() for a in spec.legacy_agents}
REGISTRY_ONLY = (("ServiceRegistry", {"action": "list_agents"}),
                 ("ServiceRegistry", {"action": "get_agent_endpoint",
                                      "agent_name": "ServiceRegistry"}))
MEMORY_ONLY = (("MemoryOrchestratorService", {"action": "search_memory",
                                              "data": {"query": "tea", "limit": 3}}),)


def legacy_handler(env: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "agents": ["ServiceRegistry"], "memories": []}


@pytest.fixture
def legacy() -> Iterator[LegacyAgent]:
    agent = LegacyAgent(legacy_handler).start()
    try:
        yield agent
    finally:
        agent.close()


Body = Callable[[FlagStore, Router, LegacyBridge], Awaitable[CutoverReport]]


def _with_system(url: str, endpoints: dict[str, str], body: Body, *, timeout_s: float = 2.0
                 ) -> tuple[CutoverReport, dict[str, float]]:
    """Run ``body`` with the ServiceRegistry up, flags opened and a bridge to ``endpoints``."""

    async def go() -> tuple[CutoverReport, dict[str, float]]:
        ctx = await ServiceContext.connect(url, config=CFG)
        await apply_streams(ctx.js)
        registry = ServiceRegistry(ctx)
        await registry.start()
        events = EventPublisher(ctx.js)
        flags = await FlagStore.open(ctx.js, events=events,
                                     defaults={n: f.fraction for n, f in CFG.feature_flags.items()})
        try:
            async with LegacyBridge(endpoints, timeout_s=timeout_s, retries=0,
                                    emit=events.emit) as bridge:
                router = Router(flags, MvsTarget(ctx.nc, SERVICES, timeout_s=timeout_s),
                                LegacyTarget(bridge), service_of=SERVICES.get)
                report = await body(flags, router, bridge)
            return report, {n: flags.fraction(n) for n in CFG.feature_flags}
        finally:
            await flags.stop()
            await events.close()
            await registry.stop()
            await ctx.close()

    return asyncio.run(go())


def test_every_step_within_budget_moves_traffic_to_mvs(nats_url: str, legacy: LegacyAgent
                                                       ) -> None:
    requests = generated_requests(60, catalog=REGISTRY_ONLY)

    async def body(flags: FlagStore, router: Router, bridge: LegacyBridge) -> CutoverReport:
        return await run_cutover(flags, router, requests, steps=(10, 50, 100))

    report, flags = _with_system(nats_url, {"ServiceRegistry": legacy.address}, body)
    assert report.ok, report.table()
    assert [s.percent for s in report.steps] == [10, 50, 100]
    shares = [s.to_mvs for s in report.steps]
    assert shares[0] < shares[1] < shares[2] == 60
    assert all(s.errors == 0 and s.p95_ms is not None for s in report.steps)
    # What was not migrated reached the legacy agent, in its envelope.
    assert len(legacy.received) == sum(60 - s for s in shares)
    assert all(env["source_agent"] == "MVSLegacyBridge" for env in legacy.received)
    assert flags["use_mvs_routing"] == flags["use_unified_memory"] == 1.0


def test_a_step_over_the_error_budget_stops_and_reverts_to_the_last_good_step(
    nats_url: str, legacy: LegacyAgent
) -> None:
    # The MVS memory service is not running here: whatever the flag sends to MVS fails.
    requests = generated_requests(100, catalog=MEMORY_ONLY)

    async def body(flags: FlagStore, router: Router, bridge: LegacyBridge) -> CutoverReport:
        return await run_cutover(flags, router, requests, steps=(10, 50, 100),
                                 max_error_rate=0.25)

    report, flags = _with_system(nats_url, {"MemoryOrchestratorService": legacy.address}, body)
    assert not report.ok
    assert report.stopped_at == 50
    assert [s.percent for s in report.steps] == [10, 50]
    assert report.steps[1].errors == report.steps[1].to_mvs > 25
    assert report.steps[1].errors_by_route == {"mvs": report.steps[1].to_mvs, "legacy": 0}
    assert "no responder on mvs.svc.MemoryOrchestratorService.search" in (
        report.steps[1].error_samples[0])
    assert report.flags_now == 0.1
    assert flags["use_unified_memory"] == 0.1
    assert "STOPPED at 50%" in report.table()


def test_a_dead_legacy_agent_fails_the_first_step_fast_through_its_breaker(
    nats_url: str
) -> None:
    dead = LegacyAgent()
    dead.start()
    dead.close()
    requests = generated_requests(40, catalog=REGISTRY_ONLY)

    async def body(flags: FlagStore, router: Router, bridge: LegacyBridge) -> CutoverReport:
        report = await run_cutover(flags, router, requests, steps=(10, 100), concurrency=1)
        assert bridge.breaker("ServiceRegistry").state == "open"
        return report

    report, flags = _with_system(nats_url, {"ServiceRegistry": dead.address}, body,
                                 timeout_s=0.1)
    assert report.stopped_at == 10
    step = report.steps[0]
    assert step.errors == 40 - step.to_mvs
    assert any("did not answer within 0.1 s" in e for e in step.error_samples)
    assert any("circuit to ServiceRegistry is open" in e for e in step.error_samples)
    assert report.flags_now == 0.0
    assert flags["use_mvs_routing"] == 0.0


def test_mvs_cutover_step_from_a_trace(
    tmp_path: Path, nats_url: str, legacy: LegacyAgent, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps({
        "time": 1750268012.0 + i, "agent": "ServiceRegistry",
        "request": {"action": "list_agents", "session_id": f"s{i}"},
        "reply": {"status": "success", "agents": []}}) for i in range(5)) + "\n")
    monkeypatch.setenv("MVS_NATS_URL", nats_url)
    monkeypatch.setenv("MVS_CONFIG", str(CONFIG))
    monkeypatch.setenv("MVS_HOME", str(tmp_path / "home"))

    async def body(flags: FlagStore, router: Router, bridge: LegacyBridge) -> CutoverReport:
        code = await asyncio.to_thread(main, [
            "cutover", "step", "--flags", "use_mvs_routing", "--steps", "50,100",
            "--requests", "20", "--trace", str(trace), "--json",
            "--record-trace", str(tmp_path / "recorded.jsonl"),
            "--legacy", f"ServiceRegistry={legacy.address}"])
        assert code == 0
        assert await flags.wait_for("use_mvs_routing", 1.0, timeout=5.0)
        return CutoverReport(flags=[], max_error_rate=0.0)

    _, flags = _with_system(nats_url, {"ServiceRegistry": legacy.address}, body)
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert [s["percent"] for s in out["steps"]] == [50, 100]
    assert out["steps"][1]["to_mvs"] == 20
    # What the legacy agent answered at the 50 % step was recorded for shadow replay.
    recorded = (tmp_path / "recorded.jsonl").read_text().splitlines()
    assert len(recorded) == 20 - out["steps"][0]["to_mvs"]
    assert flags["use_mvs_routing"] == 1.0


def test_unknown_flags_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MVS_CONFIG", str(CONFIG))
    monkeypatch.setenv("MVS_HOME", str(tmp_path))
    assert main(["cutover", "step", "--flags", "use_mvs_routng"]) == 1
    assert "unknown flag(s) use_mvs_routng" in capsys.readouterr().err
