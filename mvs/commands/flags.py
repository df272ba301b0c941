"""``mvs flags set NAME FRACTION`` and ``mvs flags ls``: feature flags in JetStream KV."""

from __future__ import annotations

import argparse
import getpass

from mvs import tasks
from mvs.bus import NatsEndpoint, connect, jetstream
from mvs.config import load_config
from mvs.flags import FlagStore
from mvs.publisher import EventPublisher
from mvs.settings import Settings
from mvs.supervisor import running_url
from streams.definitions import apply_streams


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flags", help="list or set feature flags (share of sessions, 0..1)")
    verbs = p.add_subparsers(dest="verb", required=True)
    s = verbs.add_parser("set", help="set a flag's fraction; every change is an event")
    s.add_argument("name")
    s.add_argument("fraction", type=float)
    s.set_defaults(func=run_set)
    verbs.add_parser("ls", help="list flags and their fractions").set_defaults(func=run_ls)


async def _flags(url: str, defaults: dict[str, float], name: str | None, fraction: float) -> str:
    nc = await connect(url, name="mvs-flags")
    try:
        js = jetstream(nc)
        await apply_streams(js)
        events = EventPublisher(js)
        store = await FlagStore.open(js, events=events, defaults=defaults, watch=False)
        lines = []
        if name is not None:
            old = store.fraction(name) if name in store.snapshot() else None
            await store.set(name, fraction, actor=getpass.getuser())
            lines.append(f"{name}: {old if old is not None else '-'} -> {fraction:g}")
        else:
            lines.append(f"{'FLAG':<28} {'FRACTION':>8}  ACTOR")
            for flag, value in sorted(store.snapshot().items()):
                lines.append(f"{flag:<28} {value.fraction:>8g}  {value.actor}")
        await events.close()
        return "\n".join(lines)
    finally:
        await nc.close()


def _run(settings: Settings, name: str | None, fraction: float = 0.0) -> int:
    config = load_config(settings.config_path)
    defaults = {k: v.fraction for k, v in config.feature_flags.items()}
    url = running_url(settings)
    if url is not None:
        print(tasks.run(_flags(url, defaults, name, fraction)))
        return 0
    # Not running: use (or briefly start) the embedded server; flags persist in its store.
    with NatsEndpoint(settings) as endpoint:
        print(tasks.run(_flags(endpoint.url, defaults, name, fraction)))
    return 0


def run_set(args: argparse.Namespace, settings: Settings) -> int:
    return _run(settings, args.name, args.fraction)


def run_ls(args: argparse.Namespace, settings: Settings) -> int:
    return _run(settings, None)
