"""Supervisor pieces: restart backoff, dependency order across processes, foreground mode."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mvs.config import decode_config
from mvs.runner import ProcessRunner
from mvs.settings import load_settings
from mvs.supervisor import restart_backoff

ROOT = Path(__file__).resolve().parents[1]


def test_restart_backoff_doubles_and_is_capped() -> None:
    delays = [restart_backoff(n, 0.5, 30.0) for n in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def _config(**deps: list[str]) -> Any:
    data: dict[str, Any] = yaml.safe_load((ROOT / "config" / "mvs_startup_config.yaml").read_text())
    keep = {"ServiceRegistry", "SystemDigitalTwin", "AsyncProcessor"}
    for name, spec in data["services"].items():
        spec["enabled"] = name in keep
        spec["health"] = {"interval_s": 0.5, "timeout_s": 1, "startup_timeout_s": 10}
        if name in deps:
            spec["dependencies"] = deps[name]
    data["processes"]["core"]["projections"] = False
    data["observability"]["metrics_port"] = 0
    return decode_config(data)


def test_a_service_waits_for_a_dependency_in_another_process(
    nats_url: str, tmp_path: Path
) -> None:
    # SystemDigitalTwin (core) depends on AsyncProcessor (pc2), which depends on
    # ServiceRegistry (core): both processes start together and the order still holds.
    config = _config(SystemDigitalTwin=["ServiceRegistry", "AsyncProcessor"])
    settings = load_settings({"MVS_HOME": str(tmp_path), "MVS_NATS_URL": nats_url})

    async def main() -> None:
        core = ProcessRunner(config, settings, process="core", url=nats_url)
        pc2 = ProcessRunner(config, settings, process="pc2", url=nats_url)

        async def late_pc2() -> None:
            await asyncio.sleep(1.0)
            await pc2.start()

        try:
            await asyncio.gather(core.start(), late_pc2())
            started = {s.name: s.started_at for r in (core, pc2) for s in r.services}
            assert started["ServiceRegistry"] < started["AsyncProcessor"]
            assert started["AsyncProcessor"] < started["SystemDigitalTwin"]
        finally:
            await core.stop()
            await pc2.stop()

    asyncio.run(main())


def test_foreground_up_prints_the_table_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    config = _config()
    data = yaml.safe_load((ROOT / "config" / "mvs_startup_config.yaml").read_text())
    for name, spec in data["services"].items():
        spec["enabled"] = config.services[name].enabled
    data["observability"]["metrics_port"] = 0
    cfg = tmp_path / "mvs.yaml"
    cfg.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MVS_")}
    env.update(MVS_HOME=str(tmp_path / "home"), MVS_CONFIG=str(cfg), MVS_NATS_PORT="0")
    proc = subprocess.Popen([sys.executable, "-m", "mvs.cli", "up", "--foreground"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(lines)
        assert "all services healthy" in text, text + (proc.stderr.read() if proc.stderr else "")
        assert "SystemDigitalTwin" in text and "AsyncProcessor" in text
        pids = [int(p) for p in (tmp_path / "home" / "supervisor.pid").read_text().split()]
        assert pids == [proc.pid]
        children = json.loads((tmp_path / "home" / "supervisor.json").read_text())["processes"]
        assert set(children) == {"core", "pc2"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not (tmp_path / "home" / "supervisor.pid").exists()
        for pid in children.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
