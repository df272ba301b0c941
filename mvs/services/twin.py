"""SystemDigitalTwin: the live state of the system, and what-if answers about load.

The state is read from the DuckDB ``twin`` projection (see ``projections/twin.sql``), not
folded here: :class:`~mvs.services.twin_state.TwinReader` queries it through the projection
host that runs in the same process (``ctx.extras["projections"]``; over NATS otherwise) after
waiting briefly for it to apply the stream's latest events. Every reply says which stream
sequence it reflects (``as_of_seq``; below ``stream_seq`` if the projection was still behind).

- services and their health: ``services`` (registered, health reports, crashes, restarts).
  Liveness is not an event (heartbeats on ``mvs.hb.>`` are not stored), so the twin listens
  to them only to mark a configured service whose heartbeats stopped ``stale``;
- hosts: ``hosts``, the latest ``twin.host_sampled.v1`` of each host. The twin samples its own
  host (psutil, every ``twin.host_sample_interval_s``, and once at start) and publishes each
  sample as that event: its own figures come back through the projection like any host's;
- loaded models, with measured memory: ``models`` (loaded) and ``model_events``;
- feature flags: ``flags`` over the configured defaults (a default is never an event);
- circuit breakers: ``breakers``.

``simulate_load`` answers the legacy twin's question, "can I load this?": from the host's
latest sampled memory and the models' measured sizes (the last ``model.loaded.v1`` of each
model that measured one, or the size the caller states), it says ``proceed``, ``caution``
(over ``twin.caution_memory_percent``, or an eviction from the pool would be needed) or
``deny`` (over ``twin.deny_memory_percent`` of host memory, or over the pool's
``memory_budget_mb``).

Without a projection host the twin stays up, reports ``degraded`` health naming the problem
and answers ``status``/``simulate_load`` with a 503 error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

import msgspec
import psutil

from mvs.errors import ProjectionError, ServiceCallError
from mvs.metrics import HOST_CPU_PERCENT, HOST_MEMORY_USED_BYTES
from mvs.rpc import HEARTBEAT_PREFIX, Empty, Heartbeat
from mvs.service import Service, endpoint
from mvs.services.twin_state import Snapshot, TwinReader
from streams.events.system import HostSampled

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

# How long a reply waits for the projection to apply the latest events before it is served
# as it stands (saying so with as_of_seq < stream_seq).
SYNC_WAIT_S = 2.0


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
    detail: str = ""


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
    as_of_seq: int = 0  # the stream sequence this state reflects
    stream_seq: int = 0  # the stream's last sequence when asked


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
    as_of_seq: int = 0
    host_sampled_at: float = 0.0  # when the host memory figure was measured


_heartbeat = msgspec.msgpack.Decoder(Heartbeat)
_LIVE = frozenset({"registered", "healthy", "degraded", "unhealthy", "unknown"})


def _f(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _host_view(row: dict[str, Any]) -> HostView:
    used, total = _f(row["memory_used_mb"]), _f(row["memory_total_mb"])
    return HostView(
        host=row["host"], cpu_percent=_f(row["cpu_percent"]), memory_used_mb=used,
        memory_total_mb=total, memory_percent=round(100 * used / total, 2) if total else 0.0,
        load_average=row["load_average"], at=_f(row["sampled_at"]),
    )


class SystemDigitalTwin(Service):
    """Live system state (services, host, models, flags, breakers) and simulate_load."""

    name = "SystemDigitalTwin"

    async def on_start(self) -> None:
        cfg = self.ctx.config
        self.sample_every = cfg.twin.host_sample_interval_s if cfg else 10.0
        self.last_sample_at = 0.0
        host = self.ctx.extras.get("projections")
        self.reader = TwinReader(self.ctx.nc, self.ctx.js, host=host)
        self.started = time.time()
        self.heard: dict[str, float] = {}  # service -> time of its last heartbeat
        self._sub = await self.ctx.nc.subscribe(f"{HEARTBEAT_PREFIX}.>", cb=self._on_beat)
        psutil.cpu_percent(interval=None)  # prime: the first reading of a process is 0.0
        # The first sample now, so the projection knows this host before anyone asks.
        self.ctx.events.emit(self._sample())
        self.spawn(self._sample_loop(), name="twin-host-sampler")

    async def on_stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _on_beat(self, msg: Any) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            beat = _heartbeat.decode(msg.data)
            self.heard[beat.service] = max(beat.at, self.heard.get(beat.service, 0.0))

    def _liveness(self, view: ServiceView, now: float) -> ServiceView:
        """``stale`` for a configured (heartbeating) service that the projection says is up
        but that has not beaten for three of its intervals."""
        spec = self.ctx.config.services.get(view.service) if self.ctx.config else None
        if spec is None or view.status not in _LIVE:
            return view
        silent_after = 3 * spec.health.interval_s
        heard = self.heard.get(view.service)
        if heard is None:
            if now - self.started <= silent_after:
                return view  # the twin itself has not listened long enough to know
            return msgspec.structs.replace(view, status="stale")
        if now - heard > silent_after:
            return msgspec.structs.replace(view, status="stale", last_seen_at=heard)
        return msgspec.structs.replace(view, last_seen_at=max(view.last_seen_at, heard))

    def _sample(self) -> HostSampled:
        mem = psutil.virtual_memory()
        cpu = psutil.cpu_percent(interval=None)
        load = psutil.getloadavg()[0] if hasattr(psutil, "getloadavg") else None
        self.last_sample_at = time.time()
        HOST_CPU_PERCENT.labels(self.ctx.host).set(cpu)
        HOST_MEMORY_USED_BYTES.labels(self.ctx.host).set(mem.total - mem.available)
        return HostSampled(
            host=self.ctx.host, cpu_percent=cpu,
            memory_used_mb=round((mem.total - mem.available) / 2**20, 1),
            memory_total_mb=round(mem.total / 2**20, 1), load_average=load, source=self.name,
        )

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sample_every)
            self.ctx.events.emit(self._sample())

    async def _snapshot(self) -> Snapshot:
        try:
            return await self.reader.snapshot(wait_s=SYNC_WAIT_S)
        except ProjectionError as exc:
            raise ServiceCallError(
                f"the twin projection is unavailable: {exc}", code="503"
            ) from exc
        except Exception as exc:  # e.g. the in-process host stopped under us
            raise ServiceCallError(
                f"the twin projection is unavailable: {type(exc).__name__}: {exc}", code="503"
            ) from exc

    def _process_of(self, service: str) -> str:
        spec = self.ctx.config.services.get(service) if self.ctx.config else None
        return spec.process if spec is not None else ""

    def _flags(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        cfg = self.ctx.config
        flags = {k: v.fraction for k, v in cfg.feature_flags.items()} if cfg else {}
        flags.update({r["name"]: _f(r["fraction"]) for r in rows})
        return dict(sorted(flags.items()))

    @endpoint("status", request=Empty, reply=TwinStatus, record=False)
    async def status(self, req: Empty) -> TwinStatus:
        snap = await self._snapshot()
        rows = snap.rows
        now = time.time()
        return TwinStatus(
            generated_at=now,
            hosts=[_host_view(r) for r in rows["hosts"]],
            services=[
                self._liveness(ServiceView(
                    service=r["service"], host=r["host"] or "", status=r["status"] or "unknown",
                    process=self._process_of(r["service"]), pid=r["pid"],
                    last_seen_at=_f(r["last_seen_at"]), detail=r["health_detail"] or "",
                ), now)
                for r in rows["services"]
            ],
            models=[
                ModelView(
                    model_id=r["model_id"], kind=r["kind"] or "", backend=r["backend"] or "",
                    host=r["host"] or "", memory_mb=_f(r["memory_mb"]),
                    loaded_at=_f(r["loaded_at"]),
                )
                for r in rows["models"]
            ],
            flags=self._flags(rows["flags"]),
            breakers=[
                BreakerView(
                    service=r["service"], dependency=r["dependency"], state=r["state"] or "",
                    failures=int(r["failures"] or 0), at=_f(r["updated_at"]),
                )
                for r in rows["breakers"]
            ],
            as_of_seq=snap.as_of_seq,
            stream_seq=snap.stream_seq,
        )

    @endpoint("simulate_load", request=SimulateLoad, reply=LoadDecision)
    async def simulate_load(self, req: SimulateLoad) -> LoadDecision:
        cfg = self.ctx.config
        caution_pct = cfg.twin.caution_memory_percent if cfg else 75.0
        deny_pct = cfg.twin.deny_memory_percent if cfg else 90.0
        budget = float(cfg.resource_pool.memory_budget_mb) if cfg else 1536.0
        max_models = cfg.resource_pool.max_models_in_memory if cfg else 3
        snap = await self._snapshot()
        loaded = {r["model_id"]: _f(r["memory_mb"]) for r in snap.rows["models"]}
        sizes = {r["model_id"]: _f(r["memory_mb"]) for r in snap.rows["sizes"]}
        required = req.extra_memory_mb
        new_models = [m for m in req.model_ids if m not in loaded]
        for model in new_models:
            size = req.memory_mb.get(model, sizes.get(model))
            if size is None:
                raise ValueError(
                    f"no measured size for model {model!r}: load it once or state memory_mb"
                )
            required += size
        own = [r for r in snap.rows["hosts"] if r["host"] == self.ctx.host]
        if not own or not own[0]["memory_total_mb"]:
            raise ServiceCallError(
                f"no memory sample of host {self.ctx.host!r} in the twin projection yet "
                f"(as of seq {snap.as_of_seq})", code="503",
            )
        host = _host_view(own[0])
        available = host.memory_total_mb - host.memory_used_mb
        projected = 100.0 * (host.memory_used_mb + required) / host.memory_total_mb
        pool_mb = sum(loaded.values())
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
            if len(loaded) + len(new_models) > max_models:
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
            as_of_seq=snap.as_of_seq, host_sampled_at=host.at,
        )

    async def check_health(self) -> dict[str, str]:
        checks = {"host_sampler": "ok", "projections": "ok"}
        if time.time() - self.last_sample_at > 3 * self.sample_every:
            checks["host_sampler"] = "no recent host sample"
        # The projection host runs in this process (if any); without it the twin has no state.
        problem = self.ctx.extras.get("projections_error")
        if problem:
            checks["projections"] = f"projection host down: {problem}"
        else:
            try:
                await asyncio.wait_for(self.reader.position(), 2.0)
            except (ProjectionError, TimeoutError) as exc:
                checks["projections"] = f"projection host unavailable: {exc or 'no answer'}"
            except Exception as exc:  # a broken host is a finding, not a crash of the twin
                checks["projections"] = f"projection host unavailable: {type(exc).__name__}: {exc}"
        return checks
