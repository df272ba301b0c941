"""``mvs shadow TRACE.jsonl``: replay recorded legacy exchanges against MVS, compare replies."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mvs import tasks
from mvs.bus import NatsEndpoint, connect
from mvs.config import load_config
from mvs.errors import ConfigError
from mvs.settings import Settings
from replay.bridge import LegacyBridge
from replay.shadow import LegacyTarget, MvsTarget, ShadowReport, Target, run_shadow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shadow", help="replay a legacy request/reply trace and compare replies")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", type=Path, help="JSONL trace (see docs/shadow-replay.md)")
    p.add_argument("--target", choices=("mvs", "legacy"), default="mvs",
                   help="replay against the MVS services (default) or live legacy agents")
    p.add_argument("--legacy", action="append", default=[], metavar="AGENT=tcp://HOST:PORT",
                   help="a legacy agent's ZeroMQ endpoint (with --target legacy), repeatable")
    p.add_argument("--similarity", type=float, default=None,
                   help="minimum text similarity (0..1) for model output (default: non-empty)")
    p.add_argument("--ignore", action="append", default=[], metavar="FIELD",
                   help="a reply field exact comparisons skip, repeatable")
    p.add_argument("--limit", type=int, default=None, help="replay at most N requests")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_endpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        agent, sep, address = item.partition("=")
        if not sep or not agent or not address.startswith(("tcp://", "ipc://")):
            raise ConfigError(f"--legacy wants AGENT=tcp://HOST:PORT, got {item!r}")
        out[agent] = address
    return out


def agent_services(settings: Settings) -> dict[str, str]:
    """Legacy agent name -> MVS service, from the config's ``legacy_agents`` lists."""
    cfg = load_config(settings.config_path)
    return {agent: name for name, spec in cfg.services.items() for agent in spec.legacy_agents}


async def _replay(args: argparse.Namespace, url: str | None, mapping: dict[str, str]
                  ) -> ShadowReport:
    async def replay(target: Target) -> ShadowReport:
        return await run_shadow(args.trace, target, min_similarity=args.similarity,
                                ignore=tuple(args.ignore), limit=args.limit)

    if args.target == "legacy":
        endpoints = parse_endpoints(args.legacy)
        if not endpoints:
            raise ConfigError("--target legacy needs at least one --legacy AGENT=tcp://...")
        async with LegacyBridge(endpoints, timeout_s=args.timeout) as bridge:
            return await replay(LegacyTarget(bridge))
    assert url is not None
    nc = await connect(url, name="mvs-shadow")
    try:
        return await replay(MvsTarget(nc, mapping, timeout_s=args.timeout))
    finally:
        await nc.close()


def print_report(report: ShadowReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(report.table())
    return 0 if report.ok else 2


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.target == "legacy":
        report = tasks.run(_replay(args, None, {}))
    else:
        mapping = agent_services(settings)
        with NatsEndpoint(settings) as endpoint:
            report = tasks.run(_replay(args, endpoint.url, mapping))
    return print_report(report, args.json)
