"""The model pool: at most N models resident, a memory budget, LRU eviction, idle unload.

This is the plan's ``resource_pool_config`` on a CPU machine: ``max_models_in_memory`` (3),
``model_idle_timeout`` (300 s), ``preload_models``, and a memory budget in MB standing in for
VRAM. Every load, unload, eviction and failed load is an event (``streams/events/models.py``)
carrying the memory it measured.

How memory is measured: the process RSS (psutil) before and after a load, and before and
after an unload (after a garbage collection). Loads are serialised so that a delta belongs to
one model. The figures are honest, not ideal: an allocator may keep freed pages (ctranslate2
never gives memory back to the OS on CPU, and glibc keeps small arenas), so an unload often
frees less than the load took, and a reload may then take less than the first load did.
Budget decisions use, per model, the largest load delta ever measured in this process (or
the spec's estimate, or its size on disk, before the first load).

Preloaded models are exempt from idle unload (they are the ones the host always wants warm)
but can still be evicted, least recently used first, when a request needs the room.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgspec
import psutil

from mvs.errors import ModelError, UnknownModel
from mvs.models.backends import LoadedModel, ModelSpec, folder_size_mb, load_model, resolve_path
from streams.base import Event
from streams.events.models import (
    ModelEvicted,
    ModelLoaded,
    ModelLoadFailed,
    ModelUnloaded,
    UnloadReason,
)

__all__ = ["EventSink", "ModelPool", "ModelStatus", "PoolConfig", "PoolStatus"]

log = logging.getLogger(__name__)

EventSink = Callable[[Event], Awaitable[object]]


class PoolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_models_in_memory: int = 3
    model_idle_timeout: float = 300.0
    memory_budget_mb: float = 2048.0
    preload_models: tuple[str, ...] = ()


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    kind: str
    backend: str
    loaded: bool
    memory_mb: float = 0.0
    idle_s: float | None = None
    in_use: int = 0
    loads: int = 0
    preloaded: bool = False


class PoolStatus(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    max_models: int
    memory_budget_mb: float
    memory_used_mb: float
    rss_mb: float
    models: list[ModelStatus]


@dataclass
class _Resident:
    model: LoadedModel
    memory_mb: float
    last_used: float
    in_use: int = 0


class ModelPool:
    """Loads models on demand within the limits; use :meth:`use` to borrow one.

    All methods run on one event loop; loading runs in a worker thread so the loop keeps
    serving. ``clock`` is injectable so that idle timeouts can be tested without waiting.
    """

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        *,
        config: PoolConfig | None = None,
        emit: EventSink | None = None,
        host: str = "mainpc",
        source: str = "model_manager",
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[ModelSpec], LoadedModel] = load_model,
    ) -> None:
        self.specs = {s.model_id: s for s in specs}
        self.config = config or PoolConfig()
        unknown = [m for m in self.config.preload_models if m not in self.specs]
        if unknown:
            raise ModelError(f"preload_models names unknown model(s): {', '.join(unknown)}")
        self._emit = emit
        self.host = host
        self.source = source
        self._clock = clock
        self._loader = loader
        self._resident: dict[str, _Resident] = {}
        self._known_mb: dict[str, float] = {}
        self._loads: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._process = psutil.Process()

    # -- borrowing -------------------------------------------------------------------------

    @asynccontextmanager
    async def use(self, model_id: str) -> AsyncIterator[LoadedModel]:
        """Borrow a model, loading it if needed; it is not evicted while borrowed."""
        async with self._lock:
            entry = self._resident.get(model_id)
            if entry is None:
                entry = await self._load_locked(model_id)
            entry.in_use += 1
        try:
            yield entry.model
        finally:
            entry.in_use -= 1
            entry.last_used = self._clock()

    async def load(self, model_id: str) -> ModelStatus:
        """Make ``model_id`` resident (a no-op if it is) and return its status."""
        async with self._lock:
            entry = self._resident.get(model_id) or await self._load_locked(model_id)
            entry.last_used = self._clock()
        return self.model_status(model_id)

    async def unload(self, model_id: str, *, reason: UnloadReason = "requested") -> bool:
        """Unload a resident model; False if it was not resident. A borrowed one is refused."""
        async with self._lock:
            entry = self._resident.get(model_id)
            if entry is None:
                return False
            if entry.in_use:
                raise ModelError(f"model {model_id!r} is in use by {entry.in_use} request(s)")
            await self._unload_locked(model_id, reason=reason)
            return True

    async def preload(self) -> list[str]:
        """Load the configured preload list; failures are events, not exceptions."""
        loaded = []
        for model_id in self.config.preload_models:
            try:
                await self.load(model_id)
                loaded.append(model_id)
            except ModelError as exc:
                log.warning("preload of %s failed: %s", model_id, exc)
        return loaded

    async def reap_idle(self) -> list[str]:
        """Unload every model idle for ``model_idle_timeout`` or longer (not preloaded ones)."""
        now = self._clock()
        async with self._lock:
            idle = [
                model_id
                for model_id, e in self._resident.items()
                if not e.in_use
                and model_id not in self.config.preload_models
                and now - e.last_used >= self.config.model_idle_timeout
            ]
            for model_id in idle:
                await self._unload_locked(model_id, reason="idle")
        return idle

    async def run_reaper(self, interval_s: float = 10.0) -> None:
        """Reap idle models every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.reap_idle()

    async def close(self) -> None:
        async with self._lock:
            for model_id in list(self._resident):
                await self._unload_locked(model_id, reason="shutdown")

    # -- status ----------------------------------------------------------------------------

    def resident(self) -> list[str]:
        return list(self._resident)

    def memory_used_mb(self) -> float:
        return sum(e.memory_mb for e in self._resident.values())

    def model_status(self, model_id: str) -> ModelStatus:
        spec = self._spec(model_id)
        entry = self._resident.get(model_id)
        return ModelStatus(
            model_id=model_id,
            kind=spec.kind,
            backend=spec.backend,
            loaded=entry is not None,
            memory_mb=round(entry.memory_mb if entry else self._known_mb.get(model_id, 0.0), 1),
            idle_s=None if entry is None else round(self._clock() - entry.last_used, 3),
            in_use=entry.in_use if entry else 0,
            loads=self._loads.get(model_id, 0),
            preloaded=model_id in self.config.preload_models,
        )

    def status(self) -> PoolStatus:
        return PoolStatus(
            host=self.host,
            max_models=self.config.max_models_in_memory,
            memory_budget_mb=self.config.memory_budget_mb,
            memory_used_mb=round(self.memory_used_mb(), 1),
            rss_mb=round(self._rss_mb(), 1),
            models=[self.model_status(m) for m in self.specs],
        )

    # -- internals -------------------------------------------------------------------------

    def _spec(self, model_id: str) -> ModelSpec:
        spec = self.specs.get(model_id)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise UnknownModel(f"unknown model {model_id!r} (known: {known})")
        return spec

    def _estimate_mb(self, spec: ModelSpec) -> float:
        if spec.model_id in self._known_mb:
            return self._known_mb[spec.model_id]
        if spec.memory_mb is not None:
            return spec.memory_mb
        try:
            return folder_size_mb(resolve_path(spec))
        except ModelError:
            return 0.0  # the load itself will fail and say why

    def _rss_mb(self) -> float:
        return float(self._process.memory_info().rss) / 2**20

    async def _load_locked(self, model_id: str) -> _Resident:
        spec = self._spec(model_id)
        try:
            await self._make_room_locked(spec)
        except ModelError as exc:
            await self._publish(ModelLoadFailed(model_id=model_id, error=str(exc), host=self.host))
            raise
        before = self._rss_mb()
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._loader, spec)
        except Exception as exc:
            error = exc if isinstance(exc, ModelError) else ModelError(f"{model_id}: {exc}")
            await self._publish(
                ModelLoadFailed(model_id=model_id, error=str(error), host=self.host)
            )
            raise error from exc
        load_ms = (time.perf_counter() - started) * 1000.0
        measured = max(0.0, self._rss_mb() - before)
        self._known_mb[model_id] = max(measured, self._known_mb.get(model_id, 0.0))
        self._loads[model_id] = self._loads.get(model_id, 0) + 1
        entry = _Resident(model=model, memory_mb=measured, last_used=self._clock())
        self._resident[model_id] = entry
        await self._publish(
            ModelLoaded(
                model_id=model_id,
                kind=spec.kind,
                backend=spec.backend,
                host=self.host,
                memory_mb=round(measured, 1),
                load_ms=round(load_ms, 1),
            )
        )
        return entry

    async def _make_room_locked(self, spec: ModelSpec) -> None:
        cfg = self.config
        need = self._estimate_mb(spec)
        if need > cfg.memory_budget_mb:
            raise ModelError(
                f"model {spec.model_id!r} needs about {need:.0f} MB, more than the whole "
                f"memory budget of {cfg.memory_budget_mb:.0f} MB"
            )

        def fits() -> bool:
            return (
                len(self._resident) < cfg.max_models_in_memory
                and self.memory_used_mb() + need <= cfg.memory_budget_mb
            )

        while not fits():
            idle = [(e.last_used, m) for m, e in self._resident.items() if not e.in_use]
            if not idle:
                raise ModelError(
                    f"no room for model {spec.model_id!r}: {len(self._resident)} model(s) "
                    f"resident using {self.memory_used_mb():.0f} of {cfg.memory_budget_mb:.0f} "
                    "MB, all in use"
                )
            _, victim = min(idle)
            await self._unload_locked(victim, reason="evicted", for_model=spec.model_id)

    async def _unload_locked(
        self, model_id: str, *, reason: UnloadReason, for_model: str = ""
    ) -> None:
        entry = self._resident.pop(model_id)
        idle_s = max(0.0, self._clock() - entry.last_used)
        before = self._rss_mb()
        await asyncio.to_thread(entry.model.close)
        gc.collect()
        freed = max(0.0, before - self._rss_mb())
        if reason == "evicted":
            event: Event = ModelEvicted(
                model_id=model_id,
                to_make_room_for=for_model,
                host=self.host,
                memory_mb=round(entry.memory_mb, 1),
                memory_freed_mb=round(freed, 1),
            )
        else:
            event = ModelUnloaded(
                model_id=model_id,
                reason=reason,
                host=self.host,
                memory_freed_mb=round(freed, 1),
                idle_s=round(idle_s, 3),
            )
        await self._publish(event)

    async def _publish(self, event: Event) -> None:
        if self._emit is None:
            return
        event = msgspec.structs.replace(event, source=self.source)
        try:
            await self._emit(event)
        except Exception as exc:  # the pool's state is real whether or not the log heard it
            log.error("could not record %s for %s: %s", event.type_tag, event.key(), exc)
