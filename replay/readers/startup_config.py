"""L10: legacy startup configs: the 77-agent inventory (MainPC ``agent_groups``, PC2
``pc2_services``).

Ports are strings such as ``"${PORT_OFFSET}+7140"``; they are resolved with ``PORT_OFFSET``
(default 0). YAML anchors and merge keys are resolved by the YAML loader. The configs are
read by ``mvs legacy plan``; ``mvs replay`` recognises them and publishes nothing for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mvs.errors import LegacyFormatError
from replay.model import Record

__all__ = ["READER", "LegacyAgent", "LegacyInventory", "load_inventory", "resolve_port"]

_VAR = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class LegacyAgent:
    name: str
    host: str
    group: str
    script_path: str
    port: int | None
    health_port: int | None
    required: bool
    dependencies: tuple[str, ...]
    source: str


@dataclass
class LegacyInventory:
    agents: list[LegacyAgent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def resolve_port(value: Any, *, port_offset: int = 0, env: dict[str, str] | None = None) -> int:
    """``7140``, ``"7140"`` or ``"${PORT_OFFSET}+7140"`` to an int; ValueError names the value."""
    if isinstance(value, bool):
        raise ValueError(f"port {value!r} is not a number")
    if isinstance(value, int):
        return value
    text = str(value)
    variables = {"PORT_OFFSET": str(port_offset), **(env or {})}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise ValueError(f"port {text!r} uses unknown variable ${{{name}}}")
        return variables[name]

    expr = _VAR.sub(sub, text).replace(" ", "")
    if not re.fullmatch(r"\d+(\+\d+)*", expr):
        raise ValueError(f"port {text!r} is not a number or a sum of numbers")
    return sum(int(p) for p in expr.split("+"))


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LegacyFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise LegacyFormatError(f"{path}: invalid YAML: {exc}") from exc


def _host_of(path: Path, data: dict[str, Any]) -> str:
    if "pc2_services" in data:
        return "pc2"
    return "mainpc"


def _agent(
    inv: LegacyInventory, path: Path, host: str, group: str, name: str, spec: Any,
    port_offset: int,
) -> None:
    where = f"{path.name}:{group}.{name}"
    if not isinstance(spec, dict):
        inv.problems.append(f"{where}: agent entry is not a mapping")
        spec = {}
    ports: list[int | None] = []
    for key in ("port", "health_check_port"):
        raw = spec.get(key)
        if raw is None:
            ports.append(None)
            continue
        try:
            ports.append(resolve_port(raw, port_offset=port_offset))
        except ValueError as exc:
            inv.problems.append(f"{where}.{key}: {exc}")
            ports.append(None)
    deps = spec.get("dependencies") or []
    if not isinstance(deps, list):
        inv.problems.append(f"{where}.dependencies: not a list")
        deps = [deps]
    inv.agents.append(
        LegacyAgent(
            name=name,
            host=host,
            group=group,
            script_path=str(spec.get("script_path") or ""),
            port=ports[0],
            health_port=ports[1],
            required=bool(spec.get("required", False)),
            dependencies=tuple(str(d) for d in deps),
            source=path.name,
        )
    )


def load_inventory(paths: list[Path], *, port_offset: int = 0) -> LegacyInventory:
    """All agents of the given legacy startup configs, with the problems met on the way."""
    inv = LegacyInventory()
    for path in paths:
        data = _load_yaml(path)
        if not isinstance(data, dict):
            inv.problems.append(f"{path.name}: not a YAML mapping")
            continue
        host = _host_of(path, data)
        groups = data.get("agent_groups")
        if isinstance(groups, dict):
            for group, agents in groups.items():
                if agents is None:
                    continue  # an empty group (the legacy file comments its agents out)
                if not isinstance(agents, dict):
                    inv.problems.append(f"{path.name}:{group}: group is not a mapping")
                    continue
                for name, spec in agents.items():
                    _agent(inv, path, host, str(group), str(name), spec, port_offset)
        services = data.get("pc2_services")
        if isinstance(services, list):
            for i, spec in enumerate(services):
                name = spec.get("name") if isinstance(spec, dict) else None
                if not name:
                    inv.problems.append(f"{path.name}:pc2_services[{i}]: no name")
                    continue
                _agent(inv, path, host, "pc2_services", str(name), spec, port_offset)
        if groups is None and services is None:
            inv.problems.append(f"{path.name}: neither agent_groups nor pc2_services")
    return inv


class StartupConfigReader:
    format = "L10"
    name = "startup-config"
    replayable = False

    def detect(self, path: Path) -> bool:
        if path.suffix.lower() not in (".yaml", ".yml"):
            return False
        try:
            data = _load_yaml(path)
        except LegacyFormatError:
            return False
        return isinstance(data, dict) and ("agent_groups" in data or "pc2_services" in data)

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        # The inventory is migrated by `mvs legacy plan`, not as events.
        return iter(())


READER = StartupConfigReader()
