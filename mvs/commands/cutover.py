"""``mvs cutover step``: step the plan's feature flags 10 % -> 100 %, report each step."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mvs import tasks
from mvs.bus import NatsEndpoint, connect
from mvs.commands.shadow import agent_services, parse_endpoints
from mvs.config import load_config
from mvs.errors import ConfigError
from mvs.flags import FlagStore
from mvs.publisher import EventPublisher
from mvs.settings import Settings
from replay.bridge import LegacyBridge, endpoints_from_configs
from replay.cutover import (
    DEFAULT_STEPS,
    PLAN_FLAGS,
    CutoverReport,
    Router,
    generated_requests,
    run_cutover,
    trace_requests,
)
from replay.shadow import LegacyTarget, MvsTarget


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _steps(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--steps wants percentages like 10,25,50,100: {exc}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cutover", help="move traffic to MVS with feature flags, step by step")
    verbs = p.add_subparsers(dest="verb", required=True)
    s = verbs.add_parser("step", help="step flags through percentages, driving requests each step")
    s.add_argument("--flags", type=_csv, default=list(PLAN_FLAGS), metavar="A,B",
                   help=f"flags to step (default {','.join(PLAN_FLAGS)})")
    s.add_argument("--steps", type=_steps, default=list(DEFAULT_STEPS), metavar="P,P",
                   help="percentages, rising (default 10,25,50,100)")
    s.add_argument("--requests", type=int, default=200, metavar="N",
                   help="requests per step (default 200)")
    s.add_argument("--trace", type=Path, default=None,
                   help="take the requests from a recorded trace (shadow JSONL format)")
    s.add_argument("--max-error-rate", type=float, default=0.05,
                   help="stop when a step's error rate exceeds this (default 0.05)")
    s.add_argument("--legacy", action="append", default=[], metavar="AGENT=tcp://HOST:PORT",
                   help="a legacy agent's endpoint, repeatable")
    s.add_argument("--legacy-config", action="append", default=[], type=Path, metavar="YAML",
                   help="legacy startup config(s) to take every agent's port from")
    s.add_argument("--legacy-host", action="append", default=[], metavar="HOST=ADDRESS",
                   help="address of a legacy host (mainpc, pc2; default 127.0.0.1)")
    s.add_argument("--record-trace", type=Path, default=None, metavar="JSONL",
                   help="append what the legacy agents answered to a shadow-replay trace")
    s.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    s.add_argument("--no-revert", action="store_true",
                   help="leave the flags at the failing step instead of the last good one")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=run_step)


def _legacy_endpoints(args: argparse.Namespace) -> dict[str, str]:
    hosts = {}
    for item in args.legacy_host:
        host, sep, address = item.partition("=")
        if not sep or not host or not address:
            raise ConfigError(f"--legacy-host wants HOST=ADDRESS, got {item!r}")
        hosts[host] = address
    endpoints = {}
    if args.legacy_config:
        endpoints = endpoints_from_configs(args.legacy_config, hosts=hosts)
    endpoints.update(parse_endpoints(args.legacy))
    return endpoints


async def _run(args: argparse.Namespace, url: str, services: dict[str, str],
               endpoints: dict[str, str]) -> CutoverReport:
    requests = (trace_requests(args.trace, args.requests) if args.trace
                else generated_requests(args.requests))
    nc = await connect(url, name="mvs-cutover")
    js = nc.jetstream()
    events = EventPublisher(js)
    flags = await FlagStore.open(js, events=events, watch=False)
    try:
        async with LegacyBridge(endpoints, timeout_s=args.timeout, emit=events.emit,
                                trace=args.record_trace) as bridge:
            router = Router(flags, MvsTarget(nc, services, timeout_s=args.timeout),
                            LegacyTarget(bridge) if endpoints else None,
                            service_of=services.get)
            return await run_cutover(flags, router, requests, flag_names=args.flags,
                                     steps=args.steps, max_error_rate=args.max_error_rate,
                                     concurrency=args.concurrency, revert=not args.no_revert)
    finally:
        await flags.stop()
        await events.close()
        await nc.close()


def run_step(args: argparse.Namespace, settings: Settings) -> int:
    known = load_config(settings.config_path).feature_flags
    unknown = [f for f in args.flags if f not in known]
    if unknown:
        raise ConfigError(f"unknown flag(s) {', '.join(unknown)}; the config has "
                          f"{', '.join(sorted(known))}")
    services = agent_services(settings)
    endpoints = _legacy_endpoints(args)
    with NatsEndpoint(settings) as endpoint:
        report = tasks.run(_run(args, endpoint.url, services, endpoints))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.table())
    return 0 if report.ok else 3
