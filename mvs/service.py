"""The service framework: typed request/reply NATS micro services that record what they do.

Writing a service::

    class Echo(msgspec.Struct, frozen=True, kw_only=True):
        text: str

    class EchoService(Service):
        name = "EchoService"          # the config name; also the NATS micro service name

        @endpoint("echo", request=Echo, reply=Echo)
        async def echo(self, req: Echo) -> Echo:
            return Echo(text=req.text)

        async def on_start(self) -> None:     # optional: open resources, self.spawn(...) loops
            ...

        async def check_health(self) -> dict[str, str]:   # optional: {"check": "ok" | problem}
            return {"db": "ok"}

    svc = EchoService(await ServiceContext.connect(nats_url, host="mainpc"))
    await svc.start()      ...      await svc.stop()

What the framework does for every service:

- It is a ``nats.micro`` service, so ``nats micro ls|info|stats|ping`` list and inspect it. An
  endpoint ``action`` listens on ``mvs.svc.<name>.<action>`` (queue group ``q``), so several
  instances share the load.
- Requests are decoded straight into the endpoint's ``request`` Struct, from JSON (a body that
  starts with ``{``, or an empty body meaning ``{}``) or MessagePack; the reply goes back in the
  encoding of the request. A body that does not decode, or a handler that raises ``ValueError``
  (``LookupError`` -> 404, :class:`~mvs.errors.CircuitOpen` -> 503, anything else -> 500), gets
  an error reply: headers ``Nats-Service-Error`` / ``Nats-Service-Error-Code`` (the micro
  convention) plus an :class:`ErrorReply` body naming the service, action and problem. The
  service keeps serving.
- Every endpoint is timed (``mvs_service_request_seconds``), counted
  (``mvs_service_requests_total``) and recorded as a ``service.call.v1`` event (background,
  batched; ``record=False`` to skip it for chatty endpoints).
- ``health`` endpoint (``mvs.svc.<name>.health``): :class:`HealthReply` from
  :meth:`Service.check_health` plus the state of the service's circuit breakers. A heartbeat
  goes out on ``mvs.hb.<name>`` every ``heartbeat_s``; a change of health status is a
  ``service.health.v2`` event; start and stop are ``service.registered.v1`` /
  ``service.deregistered.v1``.
- :meth:`Service.breaker` gives the circuit breaker guarding one downstream dependency
  (config ``circuit_breaker``; changes become ``breaker.changed.v1`` events).
- Handlers run one at a time per endpoint (micro semantics) unless the endpoint says
  ``concurrency=N``; then up to N requests run at once.
- :func:`current_call` inside a handler gives the call id, correlation id and headers.

Calling a service: :class:`ServiceClient` (``await client.call("EchoService", "echo",
Echo(text="hi"), Echo)``) raises :class:`~mvs.errors.ServiceCallError` with the remote code
and message on an error reply, no responder (503) or timeout (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.micro import add_service
from nats.micro.service import EndpointStats
from nats.micro.service import Service as MicroService

from mvs.breaker import CircuitBreaker
from mvs.endpoints import Call, EndpointSpec, current_call, endpoint, make_handler
from mvs.errors import MvsError
from mvs.logs import get_logger
from mvs.metrics import SERVICE_UP
from mvs.publisher import EventPublisher
from mvs.rpc import (
    CORRELATION_HEADER,
    HEARTBEAT_PREFIX,
    Empty,
    ErrorReply,
    HealthReply,
    Heartbeat,
    ServiceClient,
)
from mvs.tasks import cancel_and_wait
from streams.events.system import (
    HealthStatus,
    ServiceDeregistered,
    ServiceHealth,
    ServiceRegistered,
)
from streams.subjects import service_subject

if TYPE_CHECKING:
    from mvs.config import MvsConfig
    from mvs.flags import FlagStore

__all__ = [
    "CORRELATION_HEADER",
    "HEARTBEAT_PREFIX",
    "Call",
    "Empty",
    "ErrorReply",
    "HealthReply",
    "Heartbeat",
    "Service",
    "ServiceClient",
    "ServiceContext",
    "current_call",
    "endpoint",
]

QUEUE_GROUP = "q"


@dataclass(kw_only=True)
class ServiceContext:
    """What a service gets from the process that runs it: connections, config, identity.

    ``events`` is shared by every service of the process (one batching publisher per process).
    ``config`` and ``flags`` are ``None`` in small tests that do not need them.
    """

    nc: Client
    js: JetStreamContext
    events: EventPublisher
    host: str = "mainpc"
    process: str = ""
    config: MvsConfig | None = None
    flags: FlagStore | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def connect(
        cls, url: str, *, host: str = "mainpc", process: str = "", config: MvsConfig | None = None
    ) -> ServiceContext:
        """Open a connection and a publisher configured from ``config.message_bus``."""
        from mvs.bus import connect, jetstream

        nc = await connect(url, name=f"mvs-{process or 'service'}")
        js = jetstream(nc)
        bus = config.message_bus if config is not None else None
        events = EventPublisher(
            js,
            batch_size=bus.batch_size if bus else 100,
            batch_timeout_ms=bus.batch_timeout_ms if bus else 50.0,
        )
        return cls(nc=nc, js=js, events=events, host=host, process=process, config=config)

    async def close(self) -> None:
        await self.events.close()
        if self.flags is not None:
            await self.flags.stop()
        if self.nc.is_connected:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.drain()
        if not self.nc.is_closed:  # the server is gone: nothing to drain into
            # nats-py's close drains the lost socket once more and raises; closed all the same
            with contextlib.suppress(nats.errors.Error, OSError):
                await self.nc.close()


_msgpack = msgspec.msgpack.Encoder()


class Service:
    """Base class of every MVS service; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1.0.0"
    description: ClassVar[str] = ""
    _endpoints: ClassVar[tuple[EndpointSpec, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        specs: dict[str, EndpointSpec] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                spec = getattr(value, "__mvs_endpoint__", None)
                if isinstance(spec, EndpointSpec):
                    specs[spec.action] = EndpointSpec(
                        spec.action, spec.request, spec.reply, spec.record, spec.concurrency, attr
                    )
        cls._endpoints = tuple(specs.values())

    def __init__(self, ctx: ServiceContext, *, heartbeat_s: float | None = None) -> None:
        if not self.name:
            raise TypeError(f"{type(self).__name__} must set the class attribute 'name'")
        self.ctx = ctx
        self.instance_id = uuid.uuid4().hex[:12]
        self.log = get_logger(f"service.{self.name}")
        spec = ctx.config.services.get(self.name) if ctx.config is not None else None
        self.heartbeat_s = heartbeat_s or (spec.health.interval_s if spec else 5.0)
        self.started_at = 0.0
        self._micro: MicroService | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._status: HealthStatus = "unknown"
        self._errors: dict[str, int] = {}

    # ---- hooks for subclasses -------------------------------------------------------------
    async def on_start(self) -> None:
        """Open resources and spawn background loops; called before endpoints are served."""

    async def on_stop(self) -> None:
        """Release resources; background tasks are already cancelled."""

    async def check_health(self) -> dict[str, str]:
        """Named checks, each ``"ok"`` or a short description of the problem."""
        return {}

    # ---- helpers for subclasses -----------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str = "") -> asyncio.Task[Any]:
        """Run a background task that is cancelled when the service stops; crashes are logged."""
        task = asyncio.get_running_loop().create_task(coro, name=name or f"{self.name}-task")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def breaker(self, dependency: str) -> CircuitBreaker:
        """The circuit breaker guarding calls from this service to ``dependency``."""
        if dependency not in self._breakers:
            cfg = self.ctx.config.circuit_breaker if self.ctx.config is not None else None
            self._breakers[dependency] = CircuitBreaker(
                service=self.name,
                dependency=dependency,
                failure_threshold=cfg.failure_threshold if cfg else 5,
                timeout_s=cfg.timeout if cfg else 30.0,
                half_open_requests=cfg.half_open_requests if cfg else 3,
                on_change=self.ctx.events.emit,
            )
        return self._breakers[dependency]

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return dict(self._breakers)

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Run :meth:`on_start`, serve every endpoint and ``health``, announce the service."""
        self.started_at = time.time()
        await self.on_start()
        self._micro = await add_service(
            self.ctx.nc,
            name=self.name,
            version=self.version,
            description=self.description or (type(self).__doc__ or "").strip().split("\n")[0],
            metadata={"host": self.ctx.host, "process": self.ctx.process, "pid": str(os.getpid())},
            queue_group=QUEUE_GROUP,
            stats_handler=self._stats_data,
        )
        health = EndpointSpec("health", Empty, HealthReply, False, 1, "_health")
        for spec in (*self._endpoints, health):
            await self._micro.add_endpoint(
                name=spec.action,
                subject=service_subject(self.name, spec.action),
                handler=make_handler(self, spec),
            )
        await self.ctx.nc.flush()
        SERVICE_UP.labels(self.name).set(1)
        await self.ctx.events.publish(
            ServiceRegistered(
                service=self.name,
                host=self.ctx.host,
                instance_id=self.instance_id,
                endpoint=service_subject(self.name, "*"),
                version=self.version,
                pid=os.getpid(),
                protocol="nats-micro",
                source=self.name,
            )
        )
        self.spawn(self._heartbeat_loop(), name=f"{self.name}-heartbeat")
        self.log.info("service started", extra={"service": self.name, "host": self.ctx.host})

    async def stop(self, reason: str = "stopped") -> None:
        """Stop serving, cancel background tasks, run :meth:`on_stop`, announce it.

        The tasks are cancelled whatever stopping the endpoints did: a failed stop used to
        leave them running (with the server gone, nats-py's drain waited 10 s for a PONG and
        raised), to loop on a closed connection after the process closed it.
        """
        try:
            await self._stop_serving()
        finally:
            await asyncio.gather(*(cancel_and_wait(task) for task in list(self._tasks)))
        await self.on_stop()
        SERVICE_UP.labels(self.name).set(0)
        gone = ServiceDeregistered(
            service=self.name, instance_id=self.instance_id, reason=reason, source=self.name
        )
        with contextlib.suppress(MvsError):
            if self.ctx.nc.is_connected:
                await self.ctx.events.publish(gone)
            else:  # not 5 s per service for an ack that cannot come: queued, and bounded
                self.ctx.events.emit(gone)  # by the publisher's close
        self.log.info("service stopped", extra={"service": self.name, "reason": reason})

    async def _stop_serving(self) -> None:
        micro, self._micro = self._micro, None
        if micro is None:
            return
        # micro's stop drains, and a drain flushes: a wait for a PONG that does not come when
        # the server is gone or stuck (nats-py's 10 s). A request cannot arrive then either.
        bound = 5.0 if self.ctx.nc.is_connected else 1.0
        try:
            await asyncio.wait_for(micro.stop(), bound)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self.log.warning("endpoints stopped without a clean drain",
                             extra={"service": self.name, "error": repr(exc)})

    async def health(self) -> HealthReply:
        try:
            checks = await asyncio.wait_for(self.check_health(), 5.0)
        except Exception as exc:  # a broken check is a health finding, not a crash
            checks = {"check_health": f"failed: {exc!r}"}
        breakers: dict[str, str] = {dep: str(b.state) for dep, b in self._breakers.items()}
        if any(v != "ok" for v in checks.values()):
            status: HealthStatus = "unhealthy" if "unhealthy" in checks.values() else "degraded"
        elif any(s == "open" for s in breakers.values()):
            status = "degraded"
        else:
            status = "healthy"
        return HealthReply(
            service=self.name,
            status=status,
            host=self.ctx.host,
            instance_id=self.instance_id,
            version=self.version,
            pid=os.getpid(),
            uptime_s=round(time.time() - self.started_at, 3),
            checks=checks,
            breakers=breakers,
        )

    async def _health(self, req: Empty) -> HealthReply:
        return await self.health()

    # ---- internals ------------------------------------------------------------------------
    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "background task failed",
                exc_info=task.exception(),
                extra={"service": self.name, "task": task.get_name()},
            )

    def _stats_data(self, stats: EndpointStats) -> dict[str, Any]:
        return {"errors": self._errors.get(stats.name, 0)}

    async def _heartbeat_loop(self) -> None:
        subject = f"{HEARTBEAT_PREFIX}.{self.name}"
        while True:
            reply = await self.health()
            beat = Heartbeat(
                service=self.name,
                host=self.ctx.host,
                instance_id=self.instance_id,
                status=reply.status,
                at=time.time(),
                pid=reply.pid,
                process=self.ctx.process,
            )
            with contextlib.suppress(nats.errors.Error):
                await self.ctx.nc.publish(subject, _msgpack.encode(beat))
            if reply.status != self._status:
                self._status = reply.status
                self.ctx.events.emit(
                    ServiceHealth(
                        service=self.name,
                        status=reply.status,
                        host=self.ctx.host,
                        instance_id=self.instance_id,
                        checks=reply.checks,
                        source=self.name,
                    )
                )
            await asyncio.sleep(self.heartbeat_s)
