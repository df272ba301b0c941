"""Services in a background event loop, as in one MVS process, called from the test thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from mvs.config import ResourcePool, load_config
from mvs.natsserver import NatsServer
from mvs.service import Service, ServiceContext
from streams.definitions import apply_streams

T = TypeVar("T")


class ServiceLoop:
    """A loop thread plus the services a subclass starts in ``start`` (into ``services``)."""

    def __init__(self, url: str, home: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.url, self.home = url, home
        self.services: list[Service] = []
        self.ctx: ServiceContext | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def connect(self) -> ServiceContext:
        """A context on the shipped config, with an empty preload list (tests load on demand)."""
        config = load_config("config/mvs_startup_config.yaml")
        config = msgspec.structs.replace(
            config, resource_pool=ResourcePool(max_models_in_memory=3, preload_models=())
        )
        self.ctx = await ServiceContext.connect(self.url, config=config)
        await apply_streams(self.ctx.js)
        return self.ctx

    async def stop(self) -> None:
        for svc in reversed(self.services):
            await svc.stop()
        if self.ctx is not None:
            await self.ctx.close()


@contextmanager
def running(cls: type[ServiceLoop], home: Path) -> Iterator[Any]:
    """A nats-server and ``cls``'s services, stopped in order even when a stop fails.

    The context is closed before the loop stops, so no client is left reconnecting to the
    stopped server for the rest of the test run.
    """
    server = NatsServer(store_dir=home / "nats", port=0)
    server.start()
    h = cls(server.url, home)
    try:
        h.run(h.start())  # type: ignore[attr-defined]
        yield h
    finally:
        try:
            h.run(h.stop(), timeout=60)
        finally:
            h.loop.call_soon_threadsafe(h.loop.stop)
            h.thread.join(30)
            server.stop()
