"""``mvs streams apply|ls``: the JetStream streams MVS needs."""

from __future__ import annotations

import argparse

from mvs import tasks
from mvs.bus import NatsEndpoint, connect, jetstream
from mvs.settings import Settings
from streams.definitions import apply_streams


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("streams", help="create/update JetStream streams, or list them")
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("apply", help="create missing streams, update changed ones").set_defaults(
        func=run_apply
    )
    verbs.add_parser("ls", help="list streams with message counts").set_defaults(func=run_ls)


async def _apply(url: str) -> list[str]:
    nc = await connect(url, name="mvs-streams")
    try:
        return [str(c) for c in await apply_streams(jetstream(nc))]
    finally:
        await nc.close()


async def _ls(url: str) -> list[tuple[str, int, int, str]]:
    nc = await connect(url, name="mvs-streams")
    try:
        rows = []
        for info in await jetstream(nc).streams_info():
            cfg, state = info.config, info.state
            rows.append((cfg.name or "", state.messages, state.bytes, ",".join(cfg.subjects or [])))
        return sorted(rows)
    finally:
        await nc.close()


def run_apply(args: argparse.Namespace, settings: Settings) -> int:
    with NatsEndpoint(settings) as endpoint:
        for line in tasks.run(_apply(endpoint.url)):
            print(line)
    return 0


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    with NatsEndpoint(settings) as endpoint:
        rows = tasks.run(_ls(endpoint.url))
    print(f"{'STREAM':<20} {'MESSAGES':>10} {'BYTES':>12}  SUBJECTS")
    for name, msgs, size, subjects in rows:
        print(f"{name:<20} {msgs:>10} {size:>12}  {subjects}")
    return 0
