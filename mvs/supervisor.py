"""The supervisor: starts a host's service processes, watches them, restarts crashed ones.

One supervisor per host (``mvs up``). It owns the embedded NATS server (unless
``MVS_NATS_URL`` names one), applies the streams, starts one :mod:`mvs.runner` process per
process group of the host (in dependency order; the runners also wait for dependencies in
other processes), waits until every enabled service of the host answers ``health`` with
``healthy``, and writes its state to ``$MVS_HOME/supervisor.json`` for ``mvs up``/``mvs
status``. It never polls: each child is awaited, and a child that exits while the supervisor
is not stopping is a crash: one ``service.crashed.v1`` event per service of the process, a
restart after an exponential backoff (reset once the process has run for a minute), and a
``service.restarted.v1`` event per service.

``python -m mvs.supervisor --host mainpc`` runs it detached (what ``mvs up`` does without
``--foreground``); SIGTERM stops the children (SIGTERM, then SIGKILL after
``supervisor.stop_timeout_s``), then NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from mvs import tasks
from mvs.bus import NatsEndpoint, connect, jetstream
from mvs.config import MvsConfig, load_config
from mvs.errors import MvsError, ServiceCallError
from mvs.logs import configure_logging, get_logger
from mvs.metrics import SUPERVISOR_RESTARTS
from mvs.procs import die_with_parent_hook
from mvs.publisher import EventPublisher
from mvs.rpc import HealthReply, ServiceClient
from mvs.settings import Settings, load_settings
from streams.definitions import apply_streams
from streams.events.system import ServiceCrashed, ServiceRestarted

__all__ = [
    "ServiceRow",
    "Supervisor",
    "SupervisorState",
    "main",
    "pid_file",
    "read_state",
    "restart_backoff",
    "running_pid",
    "running_url",
    "state_file",
    "stop_supervisor",
]

log = get_logger("supervisor")
_STABLE_S = 60.0


def state_file(settings: Settings) -> Path:
    return settings.home / "supervisor.json"


def pid_file(settings: Settings) -> Path:
    return settings.home / "supervisor.pid"


class ServiceRow(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    host: str
    process: str
    status: str
    pid: int | None = None
    uptime_s: float | None = None
    detail: str = ""


class SupervisorState(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    host: str
    url: str
    state: str  # starting | ready | degraded | stopping | stopped | failed
    started_at: float
    ready_after_s: float | None = None
    processes: dict[str, int] = msgspec.field(default_factory=dict)
    services: list[ServiceRow] = msgspec.field(default_factory=list)
    error: str = ""


def read_state(settings: Settings) -> SupervisorState | None:
    try:
        return msgspec.json.decode(state_file(settings).read_bytes(), type=SupervisorState)
    except (OSError, msgspec.DecodeError):
        return None


@dataclass
class _Child:
    group: str
    proc: asyncio.subprocess.Process
    started_at: float
    failures: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Runs the process groups of ``host`` ("mainpc", "pc2" or "all") against NATS at ``url``."""

    def __init__(self, config: MvsConfig, settings: Settings, *, host: str, url: str) -> None:
        self.config = config
        self.settings = settings
        self.host = host
        self.url = url
        self.groups = config.process_order(host)
        self.services = config.start_order(host)
        self.children: dict[str, _Child] = {}
        self.started_at = time.time()
        self._stopping = False
        self._nc: Any = None
        self._events: EventPublisher | None = None
        self.state = "starting"
        self.rows: list[ServiceRow] = []
        self.ready_after_s: float | None = None
        self.error = ""

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._nc = await connect(self.url, name="mvs-supervisor")
        js = jetstream(self._nc)
        await apply_streams(js)
        self._events = EventPublisher(js)
        self.write_state()
        for group in self.groups:
            await self._spawn(group)

    async def wait_healthy(self, timeout: float) -> bool:
        """Poll ``health`` of every service until all are healthy or ``timeout`` passes."""
        client = ServiceClient(self._nc, timeout=1.0)
        deadline = time.monotonic() + timeout
        while True:
            self.rows = await self._health_rows(client)
            if all(r.status == "healthy" for r in self.rows):
                self.state = "ready"
                self.ready_after_s = round(time.time() - self.started_at, 3)
                self.write_state()
                return True
            if time.monotonic() >= deadline:
                self.state = "degraded"
                self.write_state()
                return False
            await asyncio.sleep(0.2)

    async def _health_rows(self, client: ServiceClient) -> list[ServiceRow]:
        async def one(name: str) -> ServiceRow:
            spec = self.config.services[name]
            try:
                h = await client.call(name, "health", None, HealthReply)
            except ServiceCallError as exc:
                return ServiceRow(service=name, host=spec.host, process=spec.process,
                                  status="down", detail=str(exc))
            detail = ", ".join(f"{k}: {v}" for k, v in h.checks.items() if v != "ok")
            return ServiceRow(service=name, host=spec.host, process=spec.process,
                              status=h.status, pid=h.pid, uptime_s=h.uptime_s, detail=detail)

        return list(await asyncio.gather(*(one(n) for n in self.services)))

    async def refresh(self) -> None:
        self.rows = await self._health_rows(ServiceClient(self._nc, timeout=1.0))
        self.write_state()

    async def stop(self) -> None:
        self._stopping = True
        self.state = "stopping"
        self.write_state()
        for group in reversed(list(self.children)):
            child = self.children[group]
            if child.watcher is not None:
                child.watcher.cancel()
            await self._terminate(child)
        if self._events is not None:
            with contextlib.suppress(Exception):
                await self._events.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        self.state = "stopped"
        self.write_state()

    async def _terminate(self, child: _Child) -> None:
        if child.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.proc.wait(), self.config.supervisor.stop_timeout_s)
        except TimeoutError:
            log.warning("process ignored SIGTERM; killing", extra={"group": child.group})
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await child.proc.wait()

    # ---- children -------------------------------------------------------------------------
    def _child_env(self) -> dict[str, str]:
        # Children inherit the caller's environment (PATH, venv, HF_HUB_OFFLINE...) plus the
        # config's global environment and the server this supervisor runs.
        env = dict(os.environ)
        for key, value in self.config.global_settings.environment.items():
            env.setdefault(key, str(value).lower() if isinstance(value, bool) else str(value))
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
        env["MVS_NATS_URL"] = self.url
        env["MVS_HOME"] = str(self.settings.home)
        env["MVS_CONFIG"] = str(self.settings.config_path.absolute())
        return env

    async def _spawn(self, group: str, failures: int = 0) -> _Child:
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{group}.log", "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mvs.runner", "--process", group, "--scope", self.host,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                env=self._child_env(), preexec_fn=die_with_parent_hook(),
            )
        child = _Child(group, proc, time.monotonic(), failures)
        child.watcher = asyncio.get_running_loop().create_task(self._watch(child))
        self.children[group] = child
        self.write_state()
        log.info("process started", extra={"group": group, "pid": proc.pid})
        return child

    async def _watch(self, child: _Child) -> None:
        code = await child.proc.wait()
        if self._stopping:
            return
        ran = time.monotonic() - child.started_at
        failures = 1 if ran >= _STABLE_S else child.failures + 1
        sup = self.config.supervisor
        backoff = restart_backoff(failures, sup.restart_backoff_s, sup.restart_backoff_max_s)
        names = self.config.services_of(child.group)
        log.error("process crashed", extra={"group": child.group, "exit_code": code,
                                            "restart_in_s": backoff})
        host = self.config.processes[child.group].host
        await self._record([
            ServiceCrashed(service=n, host=host, exit_code=code, source="supervisor",
                           reason=f"process {child.group} (pid {child.proc.pid}) exited "
                                  f"with {code} after {ran:.1f} s")
            for n in names
        ])
        await asyncio.sleep(backoff)
        if self._stopping:
            return
        await self._spawn(child.group, failures)
        SUPERVISOR_RESTARTS.labels(child.group).inc()
        await self._record([
            ServiceRestarted(service=n, host=host, attempt=failures, backoff_s=backoff,
                             source="supervisor")
            for n in names
        ])

    async def _record(self, events: list[Any]) -> None:
        assert self._events is not None
        for event in events:
            try:
                await self._events.publish(event)
            except MvsError as exc:  # the log being away must not stop restarts
                log.warning("could not record event", extra={"error": str(exc)})

    def write_state(self) -> None:
        state = SupervisorState(
            pid=os.getpid(),
            host=self.host,
            url=self.url,
            state=self.state,
            started_at=self.started_at,
            ready_after_s=self.ready_after_s,
            processes={g: c.proc.pid for g, c in self.children.items()},
            services=self.rows,
            error=self.error,
        )
        path = state_file(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(state))
        tmp.replace(path)


def restart_backoff(failures: int, base_s: float, max_s: float) -> float:
    """Delay before restart number ``failures`` (1-based): doubling from ``base_s``, capped."""
    return float(min(max_s, base_s * 2 ** max(0, failures - 1)))


def startup_timeout(config: MvsConfig, host: str) -> float:
    return max(
        (config.services[n].health.startup_timeout_s for n in config.start_order(host)),
        default=10.0,
    )


async def supervise(
    config: MvsConfig,
    settings: Settings,
    *,
    host: str,
    url: str,
    stop: asyncio.Event,
    on_ready: Any = None,
) -> bool:
    """Start, wait for health, call ``on_ready(supervisor, healthy)``, run until ``stop``."""
    sup = Supervisor(config, settings, host=host, url=url)
    healthy = False
    try:
        await sup.start()
        healthy = await sup.wait_healthy(startup_timeout(config, host))
        if on_ready is not None:
            on_ready(sup, healthy)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 15.0)
            if not stop.is_set():
                await sup.refresh()
    except MvsError as exc:
        sup.state, sup.error = "failed", str(exc)
        sup.write_state()
        raise
    finally:
        await sup.stop()
    return healthy


def run(settings: Settings, *, host: str, on_ready: Any = None) -> int:
    """Own NATS and the supervisor in this process until SIGTERM/SIGINT."""
    config = load_config(settings.config_path)
    pid_path = pid_file(settings)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.write_text(str(os.getpid()))
    try:
        with NatsEndpoint(settings) as endpoint:

            async def main() -> bool:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
                return await supervise(
                    config, settings, host=host, url=endpoint.url, stop=stop, on_ready=on_ready
                )

            tasks.run(main())
    finally:
        with contextlib.suppress(FileNotFoundError):
            pid_path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvs.supervisor")
    parser.add_argument("--host", default="all", choices=("mainpc", "pc2", "all"))
    args = parser.parse_args(argv)
    configure_logging()
    settings = load_settings()
    try:
        return run(settings, host=args.host)
    except MvsError as exc:
        log.error("supervisor failed", extra={"error": str(exc)})
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def running_pid(settings: Settings) -> int | None:
    """The pid of the supervisor running on ``settings.home``, if one is alive."""
    try:
        pid = int(pid_file(settings).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def running_url(settings: Settings) -> str | None:
    """The NATS URL of the running system: ``MVS_NATS_URL``, else the supervisor's server."""
    if settings.nats_url:
        return settings.nats_url
    state = read_state(settings)
    if state is None or running_pid(settings) is None:
        return None
    return state.url


def stop_supervisor(settings: Settings, *, timeout: float = 20.0) -> str:
    """SIGTERM the running supervisor, wait for it, SIGKILL its process group if it hangs."""
    pid = running_pid(settings)
    if pid is None:
        return f"MVS is not running on {settings.home}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(settings) is None and not _alive(pid):
            return f"stopped (supervisor pid {pid})"
        time.sleep(0.1)
    # Only a detached supervisor leads its own process group; never signal the caller's group.
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        pid_file(settings).unlink()
    return f"killed (supervisor pid {pid} did not stop within {timeout:.0f} s)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True
