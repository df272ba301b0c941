"""``mvs legacy plan``: the 77 legacy agents, where each went, and the decommission order."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mvs.errors import ConfigError
from mvs.settings import Settings
from replay.legacy_plan import build_plan, load_agent_map, plan_as_dict, render_plan
from replay.readers.startup_config import READER as STARTUP_CONFIG

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("legacy", help="the legacy system: agent inventory and decommission plan")
    verbs = p.add_subparsers(dest="verb", required=True)
    plan = verbs.add_parser(
        "plan",
        help="list the legacy agents, where each went among the 13 services, and the order "
        "in which to stop them",
    )
    plan.add_argument(
        "configs", nargs="+", type=Path, metavar="CONFIG",
        help="legacy startup configs or folders holding them "
        "(e.g. ../shared/legacy/samples/configs)",
    )
    plan.add_argument(
        "--map", type=Path, default=None,
        help="the agent map (default: legacy_agent_map.yaml beside the MVS config)",
    )
    plan.add_argument("--port-offset", type=int, default=0, help="${PORT_OFFSET} (default 0)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(func=run_plan)


def _config_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and STARTUP_CONFIG.detect(f)
            )
            if not found:
                raise ConfigError(f"{p}: holds no legacy startup config (agent_groups or "
                                  "pc2_services YAML)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such file or folder")
    return files


def run_plan(args: argparse.Namespace, settings: Settings) -> int:
    map_path = args.map or settings.config_path.parent / "legacy_agent_map.yaml"
    plan = build_plan(
        _config_files(args.configs), load_agent_map(map_path), port_offset=args.port_offset
    )
    if args.json:
        print(json.dumps(plan_as_dict(plan), indent=2))
    else:
        print(render_plan(plan))
    return 0 if plan.ok else 2
