from __future__ import annotations

import asyncio

from mvs.bus import connect, jetstream
from streams.definitions import EVENTS_STREAM, apply_streams, stream_definitions


def test_apply_twice_changes_nothing_the_second_time(nats_url: str) -> None:
    async def run() -> tuple[list[str], list[str]]:
        nc = await connect(nats_url)
        js = jetstream(nc)
        first = [c.action for c in await apply_streams(js)]
        second = [c.action for c in await apply_streams(js)]
        await nc.close()
        return first, second

    first, second = asyncio.run(run())
    assert set(first) == {"created"}
    assert set(second) == {"unchanged"}


def test_apply_updates_a_changed_stream_and_names_the_field(nats_url: str) -> None:
    async def run() -> list[str]:
        nc = await connect(nats_url)
        js = jetstream(nc)
        await apply_streams(js)
        changes = await apply_streams(js, stream_definitions(duplicate_window_s=300))
        info = await js.stream_info(EVENTS_STREAM)
        await nc.close()
        assert info.config.duplicate_window == 300
        return [str(c) for c in changes]

    lines = asyncio.run(run())
    assert f"{EVENTS_STREAM}: updated (duplicate_window)" in lines


def test_event_log_denies_delete_and_purge(nats_url: str) -> None:
    async def run() -> None:
        nc = await connect(nats_url)
        js = jetstream(nc)
        await apply_streams(js)
        info = await js.stream_info(EVENTS_STREAM)
        await nc.close()
        assert info.config.deny_delete and info.config.deny_purge and info.config.allow_atomic

    asyncio.run(run())
