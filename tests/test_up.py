"""`mvs up` / `status` / `down` as a user runs them: real processes, real NATS, temp MVS_HOME."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats.errors
import psutil
import pytest
import yaml

from mvs.bus import connect
from mvs.rpc import ERROR_CODE_HEADER, ERROR_HEADER, HealthReply, ServiceClient
from streams.catalog import decode_event
from streams.events.system import ServiceCrashed, ServiceRestarted

ROOT = Path(__file__).resolve().parents[1]
MVS = [sys.executable, "-m", "mvs.cli"]


def _module_present(ref: str) -> bool:
    return importlib.util.find_spec(ref.partition(":")[0]) is not None


@pytest.fixture
def mvs_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The shipped config with test-friendly ports and intervals, in a temp MVS_HOME.

    Services whose module has not landed yet are disabled, so the test covers every service
    that exists.
    """
    data: dict[str, Any] = yaml.safe_load((ROOT / "config" / "mvs_startup_config.yaml").read_text())
    for spec in data["services"].values():
        if spec.get("enabled", True) and not _module_present(spec["module"]):
            spec["enabled"] = False
        spec["health"] = {"interval_s": 1, "timeout_s": 1, "startup_timeout_s": 10}
    data["observability"]["metrics_port"] = 0
    data["supervisor"]["restart_backoff_s"] = 0.2
    cfg = tmp_path / "mvs.yaml"
    cfg.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MVS_")}
    env.update(MVS_HOME=str(tmp_path / "home"), MVS_CONFIG=str(cfg), MVS_NATS_PORT="0",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield env
    finally:
        subprocess.run([*MVS, "down", "--timeout", "15"], env=env, cwd=ROOT,
                       capture_output=True, timeout=60)


def _mvs(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MVS, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _state(env: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads((Path(env["MVS_HOME"]) / "supervisor.json").read_text()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_makes_every_service_healthy_status_shows_the_twin_and_down_stops_all(
    mvs_env: dict[str, str],
) -> None:
    up = _mvs(mvs_env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "all services healthy" in up.stdout
    state = _state(mvs_env)
    enabled = [n for n, s in yaml.safe_load(Path(mvs_env["MVS_CONFIG"]).read_text())[
        "services"].items() if s.get("enabled", True)]
    assert sorted(r["service"] for r in state["services"]) == sorted(enabled)
    assert all(r["status"] == "healthy" for r in state["services"])
    assert state["ready_after_s"] is not None  # reached inside the 10 s health deadline

    again = _mvs(mvs_env, "up")
    assert again.returncode == 1 and "already runs" in again.stderr

    status = _mvs(mvs_env, "status", "--json")
    assert status.returncode == 0, status.stderr
    twin = json.loads(status.stdout)
    seen = {s["service"]: s["status"] for s in twin["services"]}
    assert {n: seen.get(n) for n in enabled} == dict.fromkeys(enabled, "healthy")
    assert twin["hosts"][0]["memory_total_mb"] > 0
    assert set(twin["flags"]) == {"use_mvs_routing", "use_unified_memory",
                                  "use_consolidated_emotion"}
    text = _mvs(mvs_env, "status")
    assert "host mainpc: cpu" in text.stdout and "flags: " in text.stdout

    pids = [state["pid"], *state["processes"].values()]
    down = _mvs(mvs_env, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
    assert _mvs(mvs_env, "status").returncode == 1


async def _endpoints(nc: Any, expect: set[str]) -> list[tuple[str, str]]:
    """Every (service, subject) that answers $SRV.INFO, like `nats micro info` does: the
    answers of every service in ``expect`` (however slow), and any others that come with
    them or within a second after."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.INFO", b"", reply=inbox)
    found: list[tuple[str, str]] = []
    while True:
        missing = expect - {name for name, _ in found}
        try:
            msg = await sub.next_msg(timeout=60.0 if missing else 1.0)
        except nats.errors.TimeoutError:
            assert not missing, f"no $SRV.INFO answer from {sorted(missing)}"
            break
        info = json.loads(msg.data)
        found += [(info["name"], e["subject"]) for e in info["endpoints"]]
    await sub.unsubscribe()
    return found


def test_a_malformed_request_on_any_service_subject_gets_an_error_and_service_keeps_serving(
    mvs_env: dict[str, str],
) -> None:
    assert _mvs(mvs_env, "up").returncode == 0
    url = _state(mvs_env)["url"]

    async def main() -> None:
        nc = await connect(url)
        try:
            endpoints = await _endpoints(
                nc, {"ServiceRegistry", "SystemDigitalTwin", "ObservabilityHub"})
            services = {s for s, _ in endpoints}
            for service, subject in endpoints:
                for bad in (b"{not json", b"\xc1"):
                    # A serial endpoint answers after the call it is busy with (e.g. embed
                    # while a model loads), so the wait is generous: the reply is the point.
                    msg = await nc.request(subject, bad, timeout=60)
                    assert msg.headers is not None, subject
                    assert msg.headers[ERROR_CODE_HEADER] == "400", (subject, msg.headers)
                    assert "malformed" in msg.headers[ERROR_HEADER], subject
                    assert service in msg.headers[ERROR_HEADER]
            client = ServiceClient(nc)
            for service in services:
                health = await client.call(service, "health", None, HealthReply)
                assert health.status == "healthy", health
        finally:
            await nc.close()

    asyncio.run(main())


def test_a_crashed_service_process_is_restarted_and_both_are_events(
    mvs_env: dict[str, str],
) -> None:
    assert _mvs(mvs_env, "up").returncode == 0
    state = _state(mvs_env)
    core_pid = state["processes"]["core"]
    os.kill(core_pid, signal.SIGKILL)

    async def main() -> None:
        nc = await connect(state["url"])
        try:
            js = nc.jetstream()
            sub = await js.subscribe("mvs.evt.service.ServiceRegistry", ordered_consumer=True)
            crashed = restarted = None
            deadline = time.monotonic() + 30
            while restarted is None and time.monotonic() < deadline:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except Exception:
                    continue
                ev = decode_event(msg.data)
                if isinstance(ev, ServiceCrashed):
                    crashed = ev
                elif isinstance(ev, ServiceRestarted):
                    restarted = ev
            assert crashed is not None and crashed.exit_code == -signal.SIGKILL
            assert str(core_pid) in crashed.reason
            assert restarted is not None and restarted.attempt == 1
            client = ServiceClient(nc, timeout=1.0)
            core = [r["service"] for r in state["services"] if r["process"] == "core"]
            deadline = time.monotonic() + 15
            while True:
                try:
                    replies = [await client.call(n, "health", None, HealthReply) for n in core]
                    if all(h.pid != core_pid and h.status == "healthy" for h in replies):
                        break
                except Exception:
                    pass
                assert time.monotonic() < deadline, f"core services not healthy again: {core}"
                await asyncio.sleep(0.2)
        finally:
            await nc.close()

    asyncio.run(main())


def test_a_killed_supervisor_takes_its_server_and_service_processes_with_it(
    mvs_env: dict[str, str],
) -> None:
    """SIGKILL runs none of the supervisor's cleanup: without the parent-death signal its
    service processes went on serving for a minute and more (and answered a second `mvs up`
    twice, the old core holding the DuckDB file), its nats-server for ever."""
    assert _mvs(mvs_env, "up").returncode == 0
    state = _state(mvs_env)
    children = [psutil.Process(p) for p in state["processes"].values()]
    server = [c for c in psutil.Process(state["pid"]).children() if "nats-server" in c.name()]
    assert len(server) == 1 and len(children) == len(state["processes"]) >= 3
    os.kill(state["pid"], signal.SIGKILL)
    # the runners stop their services (the server going away as they do): bounded, not a
    # minute of retries against a server that is gone
    _gone, alive = psutil.wait_procs([*children, *server], timeout=30)
    assert not alive, f"outlived their supervisor: {[p.cmdline() for p in alive]}"
