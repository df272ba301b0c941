"""Laws of the event log, as property tests against a real nats-server.

- appending any sequence of events, in any split into atomic batches, pipelined runs and
  single appends, and reading it back gives the same sequence;
- appending again events that are stored (same Msg-Id) never stores a second copy;
- of concurrent writers expecting the same last sequence on one subject, exactly one wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import any_event

from mvs.bus import connect
from mvs.errors import ConcurrencyConflict
from mvs.eventlog import EventLog
from mvs.natsserver import NatsServer
from streams.base import Event
from streams.catalog import decode_event, encode_event, subject_of
from streams.definitions import apply_streams
from streams.events.memory import MemoryWritten

LAW_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def law_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(store_dir=tmp_path_factory.mktemp("laws-nats"), port=0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def _last_seq(log: EventLog) -> int:
    return int((await log.js.stream_info(log.stream)).state.last_seq)


def _on_log(url: str, body: Callable[[EventLog, int], Awaitable[None]]) -> None:
    """Run ``body`` on the module's MVS_EVENTS, given the stream's last sequence before it.

    Examples share one stream that is never deleted: nats-server 2.15.1, deleting a file
    stream and at once re-creating one of the same name, now and then brings the deleted
    stream's messages back into the new one (seen on a busy machine: an example found the
    previous example's events at sequences 1..n before its own). So each example appends
    after what is stored, with event ids of its own, and reads back from there: whatever
    lands in the stream during the example, a duplicate above all, is in what it reads.
    """

    async def main() -> None:
        nc = await connect(url)
        try:
            js = nc.jetstream()
            await apply_streams(js)
            log = EventLog(js)
            await body(log, await _last_seq(log))
        finally:
            await nc.close()

    asyncio.run(main())


def _unique(events: list[Event]) -> list[Event]:
    """Give each drawn event its own id: the id is the Msg-Id, and equal ids are deduplicated."""
    run = uuid.uuid4().hex
    return [msgspec.structs.replace(e, event_id=f"{run}-{i}") for i, e in enumerate(events)]


# A split of a sequence: chunk sizes and how each chunk is appended.
chunk_plans = st.lists(
    st.tuples(st.integers(1, 8), st.sampled_from(["batch", "many", "single"])), min_size=1
)


async def _append_in_chunks(
    log: EventLog, events: list[Event], plan: list[tuple[int, str]]
) -> list[int]:
    seqs: list[int] = []
    i = 0
    for size, how in plan * (len(events) + 1):
        if i >= len(events):
            break
        chunk = events[i : i + size]
        i += size
        if how == "batch":
            seqs.extend((await log.append_batch(chunk)).seqs)
        elif how == "many":
            seqs.extend((await log.append_many(chunk)).seqs)
        else:
            seqs.extend([(await log.append(e)).seq for e in chunk])
    return seqs


@LAW_SETTINGS
@given(events=st.lists(any_event, min_size=1, max_size=25), plan=chunk_plans)
def test_any_split_of_appends_reads_back_the_same_sequence(
    law_server: str, events: list[Event], plan: list[tuple[int, str]]
) -> None:
    events = _unique(events)

    async def body(log: EventLog, base: int) -> None:
        seqs = await _append_in_chunks(log, events, plan)
        assert seqs == list(range(base + 1, base + len(events) + 1))
        records = [r async for r in log.read(from_seq=base + 1)]
        assert [r.seq for r in records] == seqs
        assert [r.subject for r in records] == [subject_of(e) for e in events]
        # What the log gives back is what the codec gives back for the same event.
        assert [r.event for r in records] == [decode_event(encode_event(e)) for e in events]

    _on_log(law_server, body)


@LAW_SETTINGS
@given(
    events=st.lists(any_event, min_size=1, max_size=20),
    plan=chunk_plans,
    retry_plan=chunk_plans,
)
def test_appending_stored_events_again_never_duplicates(
    law_server: str,
    events: list[Event],
    plan: list[tuple[int, str]],
    retry_plan: list[tuple[int, str]],
) -> None:
    events = _unique(events)

    async def body(log: EventLog, base: int) -> None:
        seqs = await _append_in_chunks(log, events, plan)
        assert seqs == list(range(base + 1, base + len(events) + 1))
        # A retry re-sends the same events, possibly split differently. Atomic batches that
        # straddle two earlier batches are refused whole, which must store nothing either.
        with contextlib.suppress(ConcurrencyConflict):
            await _append_in_chunks(log, events, retry_plan)
        records = [r async for r in log.read(from_seq=base + 1)]
        assert [r.seq for r in records] == seqs
        assert [r.event.event_id for r in records] == [e.event_id for e in events]
        assert await _last_seq(log) == seqs[-1]

    _on_log(law_server, body)


@LAW_SETTINGS
@given(writers=st.integers(2, 6), rounds=st.integers(1, 4))
def test_of_concurrent_writers_on_one_subject_exactly_one_wins(
    law_server: str, writers: int, rounds: int
) -> None:
    # A subject of its own: the stream holds earlier examples' events.
    memory_id = f"contended-{uuid.uuid4().hex}"

    async def body(log: EventLog, base: int) -> None:
        expected = 0
        subject = subject_of(MemoryWritten(memory_id=memory_id, content=""))
        for r in range(rounds):
            attempts = [
                log.append(
                    MemoryWritten(memory_id=memory_id, content=f"round {r} writer {w}"),
                    expected_last_subject_seq=expected,
                )
                for w in range(writers)
            ]
            results = await asyncio.gather(*attempts, return_exceptions=True)
            wins = [x for x in results if not isinstance(x, BaseException)]
            losses = [x for x in results if isinstance(x, ConcurrencyConflict)]
            assert len(wins) == 1 and len(losses) == writers - 1
            expected = wins[0].seq
            assert await log.last_subject_seq(subject) == expected
        assert len([r async for r in log.read(from_seq=base + 1)]) == rounds

    _on_log(law_server, body)
