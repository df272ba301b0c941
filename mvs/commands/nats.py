"""``mvs nats``: run the embedded NATS server in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading

from mvs.bus import NatsEndpoint
from mvs.errors import NatsUnavailable
from mvs.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nats", help="run the embedded NATS JetStream server in the foreground")
    p.add_argument(
        "--port", type=int, default=None, help="loopback port (default MVS_NATS_PORT or 4222)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if settings.nats_url:
        raise NatsUnavailable(
            f"MVS_NATS_URL is set ({settings.nats_url}): unset it to run the embedded server"
        )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with NatsEndpoint(settings, port=args.port) as endpoint:
        if not endpoint.embedded:
            print(f"an embedded server for {settings.home} already runs at {endpoint.url}")
            return 0
        print(f"nats-server ready at {endpoint.url} (store {settings.jetstream_dir})")
        print("Ctrl-C stops it")
        stop.wait()
    print("nats-server stopped")
    return 0
