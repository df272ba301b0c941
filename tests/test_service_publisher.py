"""Publisher-side batching of background events; interactive events go out at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js import JetStreamContext

from mvs.bus import connect
from mvs.errors import BusError
from mvs.natsserver import NatsServer
from mvs.publisher import EventPublisher
from streams.definitions import apply_streams
from streams.events.system import HostSampled, ServiceHealth


def _sample(i: int) -> HostSampled:
    return HostSampled(host=f"h{i}", cpu_percent=1.0, memory_used_mb=1.0, memory_total_mb=2.0)


@contextlib.asynccontextmanager
async def _publisher(url: str, **options: Any) -> AsyncIterator[tuple[EventPublisher,
                                                                      JetStreamContext]]:
    """A publisher on a fresh connection to ``url``, the streams applied; closed after."""
    nc = await connect(url)
    js = nc.jetstream()
    await apply_streams(js)
    pub = EventPublisher(js, **options)
    try:
        yield pub, js
    finally:
        await pub.close()
        await nc.close()


async def _count(js: JetStreamContext) -> int:
    info = await js.stream_info("MVS_EVENTS")
    return int(info.state.messages)


def test_a_full_batch_flushes_without_waiting_for_the_timeout(nats_url: str) -> None:
    async def main() -> None:
        # a timeout so long that only the size trigger can explain a flush
        async with _publisher(nats_url, batch_size=100, batch_timeout_ms=60_000) as (pub, js):
            for i in range(100):
                pub.emit(_sample(i))
            for _ in range(100):
                if await _count(js) == 100:
                    break
                await asyncio.sleep(0.05)
            assert await _count(js) == 100
            pub.emit(_sample(100))  # a lone event waits for the timeout...
            await asyncio.sleep(0.3)
            assert await _count(js) == 100 and pub.pending == 1
            await pub.flush()  # ...or an explicit flush
            assert await _count(js) == 101 and pub.pending == 0

    asyncio.run(main())


def test_background_events_arrive_after_the_batch_timeout_and_interactive_ones_at_once(
    nats_url: str,
) -> None:
    async def main() -> None:
        async with _publisher(nats_url, batch_size=100, batch_timeout_ms=50) as (pub, js):
            pub.emit(_sample(1))
            pub.emit(_sample(2))
            assert await _count(js) == 0
            ack = await pub.publish(_sample(3))  # interactive: acknowledged on return
            assert ack.stream == "MVS_EVENTS"
            for _ in range(100):
                if await _count(js) == 3:
                    break
                await asyncio.sleep(0.02)
            assert await _count(js) == 3

    asyncio.run(main())


def test_a_retried_batch_is_stored_once(nats_url: str) -> None:
    async def main() -> None:
        async with _publisher(nats_url) as (pub, js):
            events = [_sample(i) for i in range(10)]
            pub.emit_many(events)
            await pub.flush()
            pub.emit_many(events)  # same event ids: a retry after a lost ack
            await pub.flush()
            assert await _count(js) == 10

    asyncio.run(main())


def test_an_event_that_cannot_be_encoded_fails_its_caller_and_the_queue_goes_on(
    nats_url: str,
) -> None:
    async def main() -> None:
        async with _publisher(nats_url, batch_size=100, batch_timeout_ms=50) as (pub, js):
            # frozen Structs do not check types when built: this one only fails when encoded
            bad = ServiceHealth(service="S", status="healthy", host="h",
                                checks={"db": object()})  # type: ignore[dict-item]
            pub.emit(_sample(1))
            with pytest.raises(BusError, match=r"cannot encode service\.health\.v2 event"):
                pub.emit(bad)
            with pytest.raises(BusError, match=r"cannot encode service\.health\.v2 event"):
                await pub.publish(bad)
            pub.emit(_sample(2))
            await asyncio.wait_for(pub.flush(), 10)
            assert await _count(js) == 2 and pub.pending == 0

    asyncio.run(main())


def test_closing_with_the_server_gone_names_what_was_not_appended_and_returns(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        nc = await connect(nats_server.url)  # reconnects for ever, as services do
        js = nc.jetstream()
        await apply_streams(js)
        pub = EventPublisher(js, batch_size=100, batch_timeout_ms=50)
        try:
            nats_server.stop()
            for i in range(3):
                pub.emit(_sample(i))
            # retries against a server that is gone would hold close() for ~25 s per batch
            closing = asyncio.create_task(pub.close(timeout=0.5))
            done, _ = await asyncio.wait({closing}, timeout=10)
            assert done, "close() waited on a server that is gone"
        finally:
            with contextlib.suppress(OSError):  # nats-py: the lost socket's last drain
                await nc.close()

    with caplog.at_level(logging.ERROR, logger="mvs.publisher"):
        asyncio.run(main())
    [record] = [r for r in caplog.records if "did not acknowledge" in r.getMessage()]
    assert getattr(record, "dropped", None) == 3
