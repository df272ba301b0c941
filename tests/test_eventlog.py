"""The async event log on MVS_EVENTS, against a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from mvs.bus import connect
from mvs.errors import ConcurrencyConflict
from mvs.eventlog import EventLog, LogRecord, Undecodable
from streams.catalog import subject_of
from streams.definitions import apply_streams
from streams.events.memory import MemoryAccessed, MemoryWritten


def _run(url: str, body: Callable[[EventLog], Awaitable[None]]) -> None:
    async def main() -> None:
        nc = await connect(url)
        try:
            js = nc.jetstream()
            await apply_streams(js)
            await body(EventLog(js))
        finally:
            await nc.close()

    asyncio.run(main())


def _written(memory_id: str, content: str = "x") -> MemoryWritten:
    return MemoryWritten(memory_id=memory_id, content=content)


async def _all(log: EventLog, subject: str = "mvs.evt.>", **kw: object) -> list[LogRecord]:
    return [rec async for rec in log.read(subject, **kw)]  # type: ignore[arg-type]


def test_appended_events_read_back_decoded_in_order(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        events = [_written("m1", "a"), MemoryAccessed(memory_id="m1"), _written("m2", "b")]
        seqs = [(await log.append(e)).seq for e in events]
        records = await _all(log)
        assert [r.seq for r in records] == seqs == [1, 2, 3]
        assert [r.event for r in records] == events
        assert [r.subject for r in records] == [subject_of(e) for e in events]
        only_m2 = await _all(log, subject_of(events[2]))
        assert [r.event for r in only_m2] == [events[2]]
        assert [r.seq for r in await _all(log, from_seq=2, limit=1)] == [2]

    _run(nats_url, body)


def test_publishing_the_same_event_twice_is_a_successful_duplicate(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        event = _written("m1")
        first = await log.append(event)
        again = await log.append(event)
        assert again.duplicate and again.seq == first.seq
        many = await log.append_many([event, _written("m2")])
        assert many.duplicates == 1
        assert len(await _all(log)) == 2

    _run(nats_url, body)


def test_a_stale_expected_subject_sequence_raises_concurrency_conflict(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        await log.append(_written("m1"), expected_last_subject_seq=0)
        assert await log.last_subject_seq(subject_of(_written("m1"))) == 1
        with pytest.raises(ConcurrencyConflict):
            await log.append(_written("m1", "late"), expected_last_subject_seq=0)
        await log.append(_written("m1", "next"), expected_last_subject_seq=1)
        assert len(await _all(log)) == 2

    _run(nats_url, body)


def test_a_refused_atomic_batch_stores_nothing(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        await log.append(_written("m1"))
        batch = [_written("m2"), _written("m3"), _written("m1", "again")]
        with pytest.raises(ConcurrencyConflict):
            await log.append_batch(batch, expected={subject_of(batch[2]): 0})
        assert len(await _all(log)) == 1
        result = await log.append_batch(batch, expected={subject_of(batch[2]): 1})
        assert result.seqs == (2, 3, 4)

    _run(nats_url, body)


def test_a_retried_atomic_batch_is_a_duplicate_not_a_second_copy(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        batch = [_written("m1"), _written("m2")]
        first = await log.append_batch(batch)
        again = await log.append_batch(batch)
        assert again.seqs == first.seqs and again.duplicates == 2
        assert len(await _all(log)) == 2

    _run(nats_url, body)


def test_undecodable_messages_are_reported_and_skipped(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        await log.append(_written("m1"))
        await log.js.publish("mvs.evt.memory.bad", b"\xc1 not msgpack")
        await log.js.publish("mvs.evt.memory.bad", b'{"type": "no.such.v1"}')
        await log.append(_written("m2"))
        bad: list[Undecodable] = []
        records = await _all(log, on_undecodable=bad.append)
        assert [r.seq for r in records] == [1, 4]
        assert [b.seq for b in bad] == [2, 3]
        assert all(b.subject == "mvs.evt.memory.bad" and b.reason for b in bad)

    _run(nats_url, body)


def test_read_from_time_starts_at_the_first_event_stored_then(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        await log.append(_written("m1"))
        await asyncio.sleep(0.05)
        cut = time.time()
        await asyncio.sleep(0.05)
        await log.append(_written("m2"))
        assert [r.seq for r in await _all(log, from_time=cut)] == [2]

    _run(nats_url, body)


def test_follow_catches_up_then_delivers_new_events_live(nats_url: str) -> None:
    async def body(log: EventLog) -> None:
        await log.append_many([_written("m1"), _written("m2")])
        seen: list[int] = []

        async def consume() -> None:
            async for rec in log.follow("mvs.evt.memory.>", from_seq=2):
                seen.append(rec.seq)
                if len(seen) == 3:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        await log.append(_written("m3"))
        await log.append(_written("m4"))
        await asyncio.wait_for(task, 10)
        assert seen == [2, 3, 4]

    _run(nats_url, body)
