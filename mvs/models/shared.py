"""The one model pool of a process, as the speech and translation services reach it.

ModelManagerSuite puts its pool in ``ctx.extras["model_pool"]``; STT, TTS and translation run
in the same ``models`` process and borrow their models from it, so the pool's limits (at most
N resident, LRU eviction, idle unload, memory budget) cover every model of the host. A
process without ModelManagerSuite (a test, a one-off CLI) gets a private pool built from the
same config, owned by the first service that asks; that service runs its reaper and closes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mvs.models.backends import DEFAULT_MODELS, ModelSpec
from mvs.models.pool import ModelPool, PoolConfig
from streams.base import Event

if TYPE_CHECKING:
    from mvs.service import ServiceContext

__all__ = ["POOL_KEY", "shared_pool"]

POOL_KEY = "model_pool"


def shared_pool(
    ctx: ServiceContext, *, source: str, extra_specs: Iterable[ModelSpec] = ()
) -> tuple[ModelPool, bool]:
    """(pool, owned): the process's pool, created (and owned by the caller) if there is none.

    ``extra_specs`` (e.g. a model folder found at run time) join the pool's known models; an id
    the pool already knows keeps its spec.
    """
    pool = ctx.extras.get(POOL_KEY)
    owned = False
    if not isinstance(pool, ModelPool):
        cfg = PoolConfig()
        if ctx.config is not None:
            rp = ctx.config.resource_pool
            # no preload here: preloading is ModelManagerSuite's job when it runs
            cfg = PoolConfig(
                max_models_in_memory=rp.max_models_in_memory,
                model_idle_timeout=rp.model_idle_timeout,
                memory_budget_mb=float(rp.memory_budget_mb),
            )

        async def emit(event: Event) -> None:
            ctx.events.emit(event)

        pool = ModelPool(DEFAULT_MODELS, config=cfg, emit=emit, host=ctx.host, source=source)
        ctx.extras[POOL_KEY] = pool
        owned = True
    for spec in extra_specs:
        pool.specs.setdefault(spec.model_id, spec)
    return pool, owned
