"""The decommission plan: the legacy agents, where each went, and the order to stop them.

Inputs are the legacy startup configs (FORMATS.md L10) and ``config/legacy_agent_map.yaml``
(each agent to one of the 13 MVS services or ``retired``). Agents are stopped in reverse
dependency order: an agent stops only after every agent that depends on it has stopped, so
nothing still running loses a dependency. Agents that can stop together form one wave.
Unknown dependencies and dependency cycles are reported; agents in a cycle stop together in
a last wave.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec

from mvs.errors import ConfigError
from replay.readers.startup_config import LegacyAgent, load_inventory

__all__ = [
    "RETIRED",
    "AgentMap",
    "LegacyPlan",
    "PlannedAgent",
    "build_plan",
    "decommission_waves",
    "load_agent_map",
    "plan_as_dict",
    "render_plan",
]

RETIRED = "retired"
EXPECTED_AGENTS = 77


class AgentMap(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    services: list[str]
    agents: dict[str, dict[str, str]]  # host -> agent -> service or "retired"


class PlannedAgent(msgspec.Struct, frozen=True):
    name: str
    host: str
    group: str
    port: int | None
    health_port: int | None
    required: bool
    dependencies: list[str]
    target: str | None  # an MVS service, "retired", or None when the map lacks the agent


class LegacyPlan(msgspec.Struct, frozen=True):
    agents: list[PlannedAgent]
    count: int
    expected: int
    by_host: dict[str, int]
    by_service: dict[str, list[str]]
    retired: list[str]
    unmapped: list[str]
    stale_map_entries: list[str]
    unknown_targets: list[str]
    unknown_dependencies: list[dict[str, str]]
    cycles: list[list[str]]
    decommission_waves: list[list[str]]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return (
            self.count == self.expected
            and not self.unmapped
            and not self.unknown_targets
            and not self.problems
        )


def load_agent_map(path: Path) -> AgentMap:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the legacy agent map: {exc.strerror}") from exc
    try:
        return msgspec.yaml.decode(data, type=AgentMap)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


def _node(a: LegacyAgent) -> str:
    return f"{a.host}/{a.name}"


def _resolve(dep: str, host: str, by_name: dict[str, list[str]]) -> str | None:
    """A dependency names an agent on the same host if there is one, else on another host."""
    nodes = by_name.get(dep)
    if not nodes:
        return None
    same = [n for n in nodes if n.startswith(f"{host}/")]
    return (same or nodes)[0]


def _find_cycles(remaining: set[str], deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (or a self-loop), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan; the graph has under a hundred nodes
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in remaining:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in deps.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(remaining):
        if v not in index:
            visit(v)
    return sorted(out)


def decommission_waves(
    nodes: list[str], deps: dict[str, set[str]]
) -> tuple[list[list[str]], list[list[str]]]:
    """Stop order as waves (dependents first) and the cycles that had to be broken."""
    dependents: dict[str, set[str]] = defaultdict(set)
    for n in nodes:
        for d in deps.get(n, ()):
            if d != n:
                dependents[d].add(n)
    stopped: set[str] = set()
    waves: list[list[str]] = []
    remaining = set(nodes)
    while remaining:
        wave = sorted(n for n in remaining if not (dependents[n] - stopped))
        if not wave:
            break
        waves.append(wave)
        stopped.update(wave)
        remaining.difference_update(wave)
    cycles: list[list[str]] = []
    if remaining:
        cycles = _find_cycles(remaining, deps)
        # What is left is a cycle or depends on one: stop it together, last.
        waves.append(sorted(remaining))
    return waves, cycles


def build_plan(configs: list[Path], agent_map: AgentMap, *, port_offset: int = 0) -> LegacyPlan:
    inv = load_inventory(configs, port_offset=port_offset)
    services = set(agent_map.services)
    problems = list(inv.problems)
    if len(services) != 13:
        problems.append(f"the agent map lists {len(services)} MVS services, not 13")
    by_name: dict[str, list[str]] = defaultdict(list)
    for a in inv.agents:
        by_name[a.name].append(_node(a))
    planned: list[PlannedAgent] = []
    deps: dict[str, set[str]] = {}
    unknown_deps: list[dict[str, str]] = []
    seen_nodes: set[str] = set()
    for a in inv.agents:
        node = _node(a)
        if node in seen_nodes:
            problems.append(f"{a.source}: agent {a.name} is defined twice on {a.host}")
            continue
        seen_nodes.add(node)
        target = agent_map.agents.get(a.host, {}).get(a.name)
        planned.append(
            PlannedAgent(
                name=a.name, host=a.host, group=a.group, port=a.port,
                health_port=a.health_port, required=a.required,
                dependencies=list(a.dependencies), target=target,
            )
        )
        resolved = set()
        for dep in a.dependencies:
            r = _resolve(dep, a.host, by_name)
            if r is None:
                unknown_deps.append({"agent": node, "dependency": dep})
            else:
                resolved.add(r)
        deps[node] = resolved
    nodes = [_node(p) for p in planned]  # type: ignore[arg-type]
    waves, cycles = decommission_waves(nodes, deps)
    by_service: dict[str, list[str]] = {s: [] for s in agent_map.services}
    retired: list[str] = []
    unmapped: list[str] = []
    unknown_targets: list[str] = []
    for p in planned:
        node = f"{p.host}/{p.name}"
        if p.target is None:
            unmapped.append(node)
        elif p.target == RETIRED:
            retired.append(node)
        elif p.target in services:
            by_service[p.target].append(node)
        else:
            unknown_targets.append(f"{node} -> {p.target}")
    mapped = {f"{h}/{n}" for h, agents in agent_map.agents.items() for n in agents}
    by_host: dict[str, int] = defaultdict(int)
    for p in planned:
        by_host[p.host] += 1
    return LegacyPlan(
        agents=planned,
        count=len(planned),
        expected=EXPECTED_AGENTS,
        by_host=dict(by_host),
        by_service=by_service,
        retired=retired,
        unmapped=unmapped,
        stale_map_entries=sorted(mapped - set(nodes)),
        unknown_targets=unknown_targets,
        unknown_dependencies=unknown_deps,
        cycles=cycles,
        decommission_waves=waves,
        problems=problems,
    )


def plan_as_dict(plan: LegacyPlan) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(plan)
    out["ok"] = plan.ok
    return out


def render_plan(plan: LegacyPlan) -> str:
    lines = [
        f"Legacy agents: {plan.count} (expected {plan.expected}; "
        + ", ".join(f"{h} {n}" for h, n in sorted(plan.by_host.items())) + ")",
        "",
        "Where each agent went:",
    ]
    for service, nodes in plan.by_service.items():
        lines.append(f"  {service:<27} {len(nodes):>2}  {', '.join(nodes) or '-'}")
    lines.append(f"  {'retired':<27} {len(plan.retired):>2}  {', '.join(plan.retired) or '-'}")
    if plan.unmapped:
        lines.append(f"  NOT IN THE MAP              {len(plan.unmapped):>2}  "
                     + ", ".join(plan.unmapped))
    lines += ["", "Decommission order (reverse dependencies; each wave can stop together):"]
    for i, wave in enumerate(plan.decommission_waves, start=1):
        lines.append(f"  wave {i:>2}: {', '.join(wave)}")
    findings = []
    findings += [f"unknown dependency: {d['agent']} -> {d['dependency']}"
                 for d in plan.unknown_dependencies]
    findings += [f"dependency cycle: {' -> '.join(c)}" for c in plan.cycles]
    findings += [f"map entry names no agent of the configs: {s}" for s in plan.stale_map_entries]
    findings += [f"unknown MVS service: {t}" for t in plan.unknown_targets]
    findings += plan.problems
    if findings:
        lines += ["", "Findings:"] + [f"  - {f}" for f in findings]
    return "\n".join(lines)
