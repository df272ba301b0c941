"""``mvs up [--host mainpc|pc2|all] [--foreground]``: start NATS, streams and the services."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time

from mvs import supervisor
from mvs.commands.status import services_table
from mvs.config import load_config
from mvs.errors import MvsError, NatsUnavailable
from mvs.settings import Settings
from mvs.supervisor import Supervisor, read_state, running_pid, startup_timeout, state_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start NATS, apply streams, start the services, wait for health")
    p.add_argument("--host", default="all", choices=("mainpc", "pc2", "all"),
                   help="which host's services to start (default all: one machine runs both)")
    p.add_argument("--foreground", action="store_true",
                   help="stay attached; Ctrl-C stops everything")
    p.set_defaults(func=run)


def _report(healthy: bool, rows: str, after: float | None, timeout: float) -> None:
    print(rows)
    if healthy:
        print(f"all services healthy after {after:.1f} s")
    else:
        print(f"not all services were healthy within {timeout:.0f} s; see `mvs status` and "
              "the logs under $MVS_HOME/logs")


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = load_config(settings.config_path)  # fail fast, before anything starts
    pid = running_pid(settings)
    if pid is not None:
        raise MvsError(f"MVS already runs on {settings.home} (supervisor pid {pid}); "
                       "`mvs down` first")
    timeout = startup_timeout(config, args.host)
    if args.foreground:
        outcome: dict[str, bool] = {}

        def on_ready(sup: Supervisor, healthy: bool) -> None:
            outcome["healthy"] = healthy
            _report(healthy, services_table(sup.rows), sup.ready_after_s, timeout)
            print("running in the foreground; Ctrl-C stops everything", flush=True)

        supervisor.run(settings, host=args.host, on_ready=on_ready)
        return 0 if outcome.get("healthy") else 1
    return _detach(settings, args.host, timeout)


def _detach(settings: Settings, host: str, timeout: float) -> int:
    with contextlib.suppress(FileNotFoundError):
        state_file(settings).unlink()
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "supervisor.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mvs.supervisor", "--host", host],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
    # NATS start, stream setup and process start come before the health deadline.
    deadline = time.monotonic() + timeout + 30.0
    while time.monotonic() < deadline:
        state = read_state(settings)
        if state is not None and state.state in ("ready", "degraded", "failed"):
            if state.state == "failed":
                raise MvsError(f"the supervisor failed: {state.error}")
            _report(state.state == "ready", services_table(state.services),
                    state.ready_after_s, timeout)
            print(f"supervisor pid {proc.pid} runs in the background; `mvs down` stops it")
            return 0 if state.state == "ready" else 1
        if proc.poll() is not None:
            tail = (logs / "supervisor.log").read_text(errors="replace")[-2000:]
            raise NatsUnavailable(f"the supervisor exited with {proc.returncode}:\n{tail}")
        time.sleep(0.1)
    raise MvsError(f"the supervisor did not report within {timeout + 30:.0f} s "
                   f"(pid {proc.pid}; see {logs / 'supervisor.log'})")
