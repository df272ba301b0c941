"""A service process: runs one process group's services in one asyncio loop.

``python -m mvs.runner --process core --host mainpc`` (the supervisor starts it with
``MVS_NATS_URL`` set to the running server). It:

1. connects to NATS and opens the process's shared :class:`~mvs.publisher.EventPublisher`
   and :class:`~mvs.flags.FlagStore` (flags seeded from the config);
2. starts the group's services in dependency order; before starting a service whose
   dependency runs in *another* process started by the same supervisor (``--scope``: a
   dependency on the other host is that host's business), it waits (up to that service's
   ``health.startup_timeout_s``) for the dependency to answer ``health``, so start order
   holds across processes too (a dependency that never shows up is logged and the service
   starts anyway, degraded, rather than blocking the system);
3. in the group marked ``projections: true`` (one per system), runs the DuckDB
   :class:`~projections.host.ProjectionHost` before the services, available to them as
   ``ctx.extras["projections"]``;
4. answers ``mvs.metrics.<process>`` with this process's Prometheus exposition, which
   ObservabilityHub merges into the one ``/metrics`` endpoint;
5. on SIGTERM/SIGINT stops its services in reverse order and exits 0.

An exception while starting exits with code 3 after logging it; the supervisor restarts the
process with backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
import time
from typing import Any

from mvs import tasks
from mvs.config import MvsConfig, load_config
from mvs.errors import ConfigError, MvsError, ServiceCallError
from mvs.flags import FlagStore
from mvs.logs import configure_logging, get_logger
from mvs.metrics import exposition
from mvs.rpc import HealthReply, ServiceClient
from mvs.service import Service, ServiceContext
from mvs.settings import Settings, load_settings
from streams.definitions import apply_streams

__all__ = ["METRICS_PREFIX", "ProcessRunner", "load_service_class", "main"]

METRICS_PREFIX = "mvs.metrics"
log = get_logger("runner")


def load_service_class(name: str, module_ref: str) -> type[Service]:
    """Import ``package.module:Class``; errors name the service and the reference."""
    module_name, _, class_name = module_ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"service {name}: cannot import {module_name}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"service {name}: {module_ref} is not a Service class")
    return cls


class ProcessRunner:
    """Starts and stops the services of one process group (usable in-process by tests)."""

    def __init__(
        self,
        config: MvsConfig,
        settings: Settings,
        *,
        process: str,
        url: str,
        scope: str = "all",
    ) -> None:
        if process not in config.processes:
            raise ConfigError(
                f"unknown process group {process!r}; known: {', '.join(config.processes)}"
            )
        self.config = config
        self.settings = settings
        self.process = process
        self.host = config.processes[process].host
        self.url = url
        # the hosts the same supervisor starts: only their services are worth waiting for
        self.scope = scope
        self.ctx: ServiceContext | None = None
        self.services: list[Service] = []
        self._sub: Any = None
        self._projections: Any = None

    async def start(self) -> None:
        names = self.config.services_of(self.process)
        classes = {n: load_service_class(n, self.config.services[n].module or "") for n in names}
        ctx = await ServiceContext.connect(
            self.url, host=self.host, process=self.process, config=self.config
        )
        self.ctx = ctx
        await apply_streams(ctx.js)
        ctx.flags = await FlagStore.open(
            ctx.js,
            events=ctx.events,
            defaults={k: v.fraction for k, v in self.config.feature_flags.items()},
        )
        ctx.extras["settings"] = self.settings
        if self.config.processes[self.process].projections:
            # DuckDB has one writer process: this one. Services of this process read through
            # ctx.extras["projections"]; other processes query it over NATS (mvs.svc.query.*).
            from projections.host import ProjectionHost

            proj = self.config.projections
            host = ProjectionHost(
                ctx.nc, self.settings.duckdb_path, url=self.url, batch=proj.batch,
                memory_mb=proj.duckdb_memory_mb, intake=proj.intake_process,
                duckdb_threads=proj.duckdb_threads,
            )
            try:
                await host.start()
            except Exception as exc:  # the services still run; the twin reports degraded
                log.error("projection host failed to start", exc_info=exc,
                          extra={"group": self.process})
                ctx.extras["projections_error"] = f"{type(exc).__name__}: {exc}"[:300]
                with contextlib.suppress(Exception):
                    await host.stop()
            else:
                self._projections = host
                ctx.extras["projections"] = host
        self._sub = await ctx.nc.subscribe(f"{METRICS_PREFIX}.{self.process}", cb=self._metrics)
        for name in names:
            await self._wait_for_remote_dependencies(name)
            service = classes[name](ctx)
            await service.start()
            self.services.append(service)
        log.info("process ready", extra={"group": self.process, "services": names})

    async def _metrics(self, msg: Any) -> None:
        with contextlib.suppress(Exception):
            await msg.respond(exposition())

    async def _wait_for_remote_dependencies(self, name: str) -> None:
        assert self.ctx is not None
        spec = self.config.services[name]
        services = self.config.services
        remote = [
            d
            for d in spec.dependencies
            if services[d].enabled
            and services[d].process != self.process
            and self.scope in ("all", services[d].host)
        ]
        if not remote:
            return
        client = ServiceClient(self.ctx.nc, timeout=0.5)
        deadline = time.monotonic() + spec.health.startup_timeout_s
        for dep in remote:
            while True:
                try:
                    await client.call(dep, "health", None, HealthReply)
                    break
                except ServiceCallError:
                    if time.monotonic() >= deadline:
                        log.warning(
                            "dependency not up; starting anyway",
                            extra={"service": name, "dependency": dep},
                        )
                        break
                    await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:  # the others still stop; this one's failure is named
                log.exception("service did not stop cleanly", extra={"service": service.name})
        self.services.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._projections is not None:
            with contextlib.suppress(Exception):
                await self._projections.stop()
            self._projections = None
        if self.ctx is not None:
            await self.ctx.close()
            self.ctx = None


async def _serve(runner: ProcessRunner) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.start()
        await stop.wait()
    finally:
        await runner.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvs.runner")
    parser.add_argument("--process", required=True, help="process group from the config")
    parser.add_argument("--scope", default="all", choices=("all", "mainpc", "pc2"),
                        help="hosts started by the same supervisor (dependencies waited for)")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging()
    try:
        config = load_config(settings.config_path)
        level = str(config.global_settings.environment.get("LOG_LEVEL", "INFO"))
        configure_logging(level)
        if not settings.nats_url:
            raise ConfigError("the service runner needs MVS_NATS_URL (the supervisor sets it)")
        runner = ProcessRunner(
            config, settings, process=args.process, url=settings.nats_url, scope=args.scope
        )
        tasks.run(_serve(runner))
    except MvsError as exc:
        log.error("process failed", extra={"group": args.process, "error": str(exc)})
        return 3
    except Exception:
        log.exception("process crashed", extra={"group": args.process})
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
