"""SystemDigitalTwin: the live state of the system, and what-if answers about load.

State, all folded from what flows on NATS (the same facts the DuckDB projections hold):

- services and their health: the heartbeats on ``mvs.hb.>``;
- the host: CPU and memory sampled with psutil every ``twin.host_sample_interval_s``, each
  sample a ``twin.host_sampled.v1`` event (background, batched);
- loaded models, with measured memory: the ``model`` events, replayed from the log at start
  (an ordered consumer) and then followed live;
- circuit breakers: the ``breaker`` events, replayed the same way;
- feature flags: the process's :class:`~mvs.flags.FlagStore` (KV watch).

``simulate_load`` answers the legacy twin's question, "can I load this?": from the last
measured host memory and the models' measured sizes (the last ``model.loaded.v1`` of each
model, or the size the caller states), it says ``proceed``, ``caution`` (over
``twin.caution_memory_percent``, or an eviction from the pool would be needed) or ``deny``
(over ``twin.deny_memory_percent`` of host memory, or over the pool's ``memory_budget_mb``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

import msgspec
import psutil

from mvs.metrics import HOST_CPU_PERCENT, HOST_MEMORY_USED_BYTES
from mvs.rpc import HEARTBEAT_PREFIX, Empty, Heartbeat
from mvs.service import Service, endpoint
from streams.catalog import decode_event
from streams.events.models import ModelEvicted, ModelLoaded, ModelUnloaded
from streams.events.system import BreakerStateChanged, HostSampled

__all__ = [
    "BreakerView",
    "HostView",
    "LoadDecision",
    "ModelView",
    "ServiceView",
    "SimulateLoad",
    "SystemDigitalTwin",
    "TwinStatus",
]


class HostView(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    cpu_percent: float
    memory_used_mb: float
    memory_total_mb: float
    memory_percent: float
    load_average: float | None = None
    at: float = 0.0


class ServiceView(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    host: str
    status: str
    process: str = ""
    pid: int | None = None
    last_seen_at: float = 0.0


class ModelView(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    kind: str
    backend: str
    host: str
    memory_mb: float
    loaded_at: float


class BreakerView(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    dependency: str
    state: str
    failures: int
    at: float


class TwinStatus(msgspec.Struct, frozen=True, kw_only=True):
    generated_at: float
    hosts: list[HostView]
    services: list[ServiceView]
    models: list[ModelView]
    flags: dict[str, float]
    breakers: list[BreakerView]


class SimulateLoad(msgspec.Struct, frozen=True, kw_only=True):
    model_ids: list[str] = msgspec.field(default_factory=list)
    extra_memory_mb: float = 0.0
    memory_mb: dict[str, float] = msgspec.field(default_factory=dict)  # stated sizes


class LoadDecision(msgspec.Struct, frozen=True, kw_only=True):
    decision: Literal["proceed", "caution", "deny"]
    reasons: list[str]
    required_mb: float
    available_mb: float
    projected_memory_percent: float
    pool_memory_mb: float
    pool_budget_mb: float


_heartbeat = msgspec.msgpack.Decoder(Heartbeat)


class SystemDigitalTwin(Service):
    """Live system state (services, host, models, flags, breakers) and simulate_load."""

    name = "SystemDigitalTwin"

    async def on_start(self) -> None:
        cfg = self.ctx.config
        self.sample_every = cfg.twin.host_sample_interval_s if cfg else 10.0
        self.services: dict[str, ServiceView] = {}
        self.hosts: dict[str, HostView] = {}
        self.models: dict[str, ModelView] = {}
        self.model_sizes: dict[str, float] = {}
        self.breaker_states: dict[tuple[str, str], BreakerView] = {}
        nc, js = self.ctx.nc, self.ctx.js
        self._subs: list[Any] = [await nc.subscribe(f"{HEARTBEAT_PREFIX}.>", cb=self._on_beat)]
        for subject in ("mvs.evt.model.>", "mvs.evt.breaker.>", "mvs.evt.twin.>"):
            # ordered consumers replay the (small) history, then follow it live
            self._subs.append(await js.subscribe(subject, ordered_consumer=True, cb=self._on_event))
        psutil.cpu_percent(interval=None)  # prime: the first reading of a process is 0.0
        self._sample()
        self.spawn(self._sample_loop(), name="twin-host-sampler")

    async def on_stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_beat(self, msg: Any) -> None:
        try:
            beat = _heartbeat.decode(msg.data)
        except msgspec.DecodeError:
            return
        self.services[beat.service] = ServiceView(
            service=beat.service, host=beat.host, status=beat.status, process=beat.process,
            pid=beat.pid, last_seen_at=beat.at,
        )

    async def _on_event(self, msg: Any) -> None:
        try:
            ev = decode_event(msg.data)
        except Exception:  # a bad event must not stop the twin; the projection dead-letters it
            return
        if isinstance(ev, ModelLoaded):
            self.models[ev.model_id] = ModelView(
                model_id=ev.model_id, kind=ev.kind, backend=ev.backend, host=ev.host,
                memory_mb=ev.memory_mb, loaded_at=ev.occurred_at,
            )
            if ev.memory_mb > 0:
                self.model_sizes[ev.model_id] = ev.memory_mb
        elif isinstance(ev, ModelUnloaded | ModelEvicted):
            self.models.pop(ev.model_id, None)
        elif isinstance(ev, BreakerStateChanged):
            self.breaker_states[(ev.service, ev.dependency)] = BreakerView(
                service=ev.service, dependency=ev.dependency, state=ev.to_state,
                failures=ev.failures, at=ev.occurred_at,
            )
        elif isinstance(ev, HostSampled) and ev.host != self.ctx.host:
            total = ev.memory_total_mb or 1.0
            self.hosts[ev.host] = HostView(
                host=ev.host, cpu_percent=ev.cpu_percent, memory_used_mb=ev.memory_used_mb,
                memory_total_mb=ev.memory_total_mb,
                memory_percent=round(100 * ev.memory_used_mb / total, 2),
                load_average=ev.load_average, at=ev.occurred_at,
            )

    def _sample(self) -> HostView:
        mem = psutil.virtual_memory()
        cpu = psutil.cpu_percent(interval=None)
        load = psutil.getloadavg()[0] if hasattr(psutil, "getloadavg") else None
        view = HostView(
            host=self.ctx.host,
            cpu_percent=cpu,
            memory_used_mb=round((mem.total - mem.available) / 2**20, 1),
            memory_total_mb=round(mem.total / 2**20, 1),
            memory_percent=round(100.0 * (mem.total - mem.available) / mem.total, 2),
            load_average=load,
            at=time.time(),
        )
        self.hosts[self.ctx.host] = view
        HOST_CPU_PERCENT.labels(self.ctx.host).set(cpu)
        HOST_MEMORY_USED_BYTES.labels(self.ctx.host).set(mem.total - mem.available)
        return view

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sample_every)
            view = self._sample()
            self.ctx.events.emit(
                HostSampled(
                    host=view.host, cpu_percent=view.cpu_percent,
                    memory_used_mb=view.memory_used_mb, memory_total_mb=view.memory_total_mb,
                    load_average=view.load_average, source=self.name,
                )
            )

    @endpoint("status", request=Empty, reply=TwinStatus, record=False)
    async def status(self, req: Empty) -> TwinStatus:
        flags = self.ctx.flags.snapshot() if self.ctx.flags is not None else {}
        stale_after = 3 * self.heartbeat_s
        now = time.time()
        services = [
            v if now - v.last_seen_at <= stale_after else msgspec.structs.replace(v, status="stale")
            for _, v in sorted(self.services.items())
        ]
        return TwinStatus(
            generated_at=now,
            hosts=[v for _, v in sorted(self.hosts.items())],
            services=services,
            models=[v for _, v in sorted(self.models.items())],
            flags={k: v.fraction for k, v in sorted(flags.items())},
            breakers=[v for _, v in sorted(self.breaker_states.items())],
        )

    @endpoint("simulate_load", request=SimulateLoad, reply=LoadDecision)
    async def simulate_load(self, req: SimulateLoad) -> LoadDecision:
        cfg = self.ctx.config
        caution_pct = cfg.twin.caution_memory_percent if cfg else 75.0
        deny_pct = cfg.twin.deny_memory_percent if cfg else 90.0
        budget = float(cfg.resource_pool.memory_budget_mb) if cfg else 1536.0
        max_models = cfg.resource_pool.max_models_in_memory if cfg else 3
        required = req.extra_memory_mb
        new_models = [m for m in req.model_ids if m not in self.models]
        for model in new_models:
            size = req.memory_mb.get(model, self.model_sizes.get(model))
            if size is None:
                raise ValueError(
                    f"no measured size for model {model!r}: load it once or state memory_mb"
                )
            required += size
        host = self._sample()
        available = host.memory_total_mb - host.memory_used_mb
        projected = 100.0 * (host.memory_used_mb + required) / host.memory_total_mb
        pool_mb = sum(m.memory_mb for m in self.models.values())
        reasons: list[str] = []
        decision: Literal["proceed", "caution", "deny"] = "proceed"
        if projected > deny_pct:
            decision = "deny"
            reasons.append(f"host memory would reach {projected:.1f}% (> {deny_pct:.0f}%)")
        if required > available:
            decision = "deny"
            reasons.append(f"needs {required:.0f} MB, {available:.0f} MB available")
        if decision != "deny":
            if projected > caution_pct:
                decision = "caution"
                reasons.append(f"host memory would reach {projected:.1f}% (> {caution_pct:.0f}%)")
            if len(self.models) + len(new_models) > max_models:
                decision = "caution"
                reasons.append(f"pool holds {max_models} models: an eviction would be needed")
            if pool_mb + required > budget:
                decision = "caution"
                reasons.append(
                    f"pool would use {pool_mb + required:.0f} MB of its {budget:.0f} MB budget: "
                    "least recently used models would be evicted"
                )
        if not reasons:
            reasons.append("within host memory and pool budget")
        return LoadDecision(
            decision=decision, reasons=reasons, required_mb=round(required, 1),
            available_mb=round(available, 1), projected_memory_percent=round(projected, 2),
            pool_memory_mb=round(pool_mb, 1), pool_budget_mb=budget,
        )

    async def check_health(self) -> dict[str, str]:
        checks = {"host_sampler": "ok"}
        own = self.hosts.get(self.ctx.host)
        if own is None or time.time() - own.at > 3 * self.sample_every:
            checks["host_sampler"] = "no recent host sample"
        # The projection host runs in this process (if any); its failure degrades the twin.
        problem = self.ctx.extras.get("projections_error")
        if problem:
            checks["projections"] = f"projection host down: {problem}"
        return checks
