"""``mvs down``: stop everything ``mvs up`` started (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import argparse

from mvs.settings import Settings
from mvs.supervisor import stop_supervisor


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("down", help="stop the services, the supervisor and the embedded NATS")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for a clean stop before killing (default 20)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    outcome = stop_supervisor(settings, timeout=args.timeout)
    print(outcome)
    return 0
