"""`mvs legacy plan`: the 77 legacy agents, their new home, and a safe decommission order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvs.errors import ConfigError
from replay.legacy_plan import build_plan, load_agent_map

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "config" / "legacy_agent_map.yaml"


def _configs(samples: Path) -> list[Path]:
    return sorted((samples / "configs").glob("*.yaml"))


def test_plan_lists_77_agents_all_mapped_to_the_13_services(legacy_samples: Path) -> None:
    plan = build_plan(_configs(legacy_samples), load_agent_map(MAP))
    assert plan.count == 77
    assert plan.by_host == {"mainpc": 54, "pc2": 23}
    assert plan.unmapped == [] and plan.stale_map_entries == [] and plan.unknown_targets == []
    assert len(plan.by_service) == 13
    assert plan.ok


def test_every_agent_stops_after_all_agents_that_depend_on_it(legacy_samples: Path) -> None:
    plan = build_plan(_configs(legacy_samples), load_agent_map(MAP))
    wave_of = {node: i for i, wave in enumerate(plan.decommission_waves) for node in wave}
    assert len(wave_of) == 77
    for agent in plan.agents:
        node = f"{agent.host}/{agent.name}"
        for dep in agent.dependencies:
            targets = [n for n in wave_of if n.endswith(f"/{dep}")]
            same_host = [n for n in targets if n.startswith(f"{agent.host}/")]
            dep_node = (same_host or targets)[0]
            assert wave_of[dep_node] > wave_of[node], f"{dep_node} stops before {node}"
    assert plan.decommission_waves[-1] == ["mainpc/ServiceRegistry", "pc2/ObservabilityHub"]


def test_unknown_dependency_cycle_and_missing_map_entry_are_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "startup_config.yaml"
    cfg.write_text(
        """
agent_groups:
  core: &core
    A: {port: "${PORT_OFFSET}+1000", dependencies: [B]}
    B: {port: 1001, dependencies: [A]}
    C: {port: "${NOPE}+1", dependencies: [Ghost, A]}
  empty:
"""
    )
    amap = tmp_path / "map.yaml"
    amap.write_text(
        "version: 1\nservices: [S1]\nagents:\n  mainpc: {A: S1, B: retired, Old: S1}\n"
    )
    plan = build_plan([cfg], load_agent_map(amap))
    assert plan.count == 3 and not plan.ok
    assert plan.unmapped == ["mainpc/C"]
    assert plan.stale_map_entries == ["mainpc/Old"]
    assert plan.unknown_dependencies == [{"agent": "mainpc/C", "dependency": "Ghost"}]
    assert plan.cycles == [["mainpc/A", "mainpc/B"]]
    assert plan.decommission_waves == [["mainpc/C"], ["mainpc/A", "mainpc/B"]]
    assert any("NOPE" in p for p in plan.problems)


def test_agent_map_with_a_typo_is_a_config_error_naming_it(tmp_path: Path) -> None:
    amap = tmp_path / "map.yaml"
    amap.write_text("version: 1\nservices: []\nagent: {}\n")
    with pytest.raises(ConfigError, match="agent"):
        load_agent_map(amap)


def test_cli_prints_the_plan_as_json(legacy_samples: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mvs.cli", "legacy", "plan", str(legacy_samples / "configs"),
         "--map", str(MAP), "--json"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )
    data = json.loads(out.stdout)
    assert data["count"] == 77 and data["ok"] is True
    assert len(data["decommission_waves"]) >= 2
