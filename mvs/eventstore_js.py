"""The JetStream requests the event store and the event log are built on.

nats-py 2.16 knows the atomic-batch headers but has no helper for atomic batch publish nor
for batch direct get, so both are written here over plain core-NATS messages, with one
wildcard reply subscription per connection (:class:`ReplyMux`) instead of a subscription per
request. Rejections come back as :class:`nats.js.errors.APIError` carrying the server's
``err_code``; the callers translate them (to eventsourcing's PEP 249 errors or to
:class:`mvs.errors.ConcurrencyConflict`).

Facts checked against nats-server 2.15.1 (see ``tests/test_eventstore_js.py``):

- an atomic batch is staged until the message with ``Nats-Batch-Commit: 1`` and then stored
  whole or not at all; the commit's pub ack carries the last sequence and the batch size;
  at most 1000 messages per batch;
- ``Nats-Expected-Last-Subject-Sequence`` is checked against the stream before the batch,
  and may only be on the first message of each subject in the batch (else err 10164);
- ``Nats-Msg-Id`` is allowed inside a batch; a batch holding an id already stored is
  rejected whole (err 10201), so a retried batch never stores twice;
- for a single publish the expected-sequence check comes before deduplication: a retry with
  the same Msg-Id and a stale expected sequence is rejected (10071), one with a matching
  expected sequence gets a duplicate ack;
- the server fsyncs when it commits an atomic batch, whatever ``sync_interval`` says, so a
  batch costs a few milliseconds on a disk however small it is (``docs/durability.md``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import APIError

__all__ = [
    "ERR_BATCH_DUPLICATE_MSG_ID",
    "ERR_WRONG_LAST_SEQUENCE",
    "MAX_ATOMIC_BATCH",
    "Ack",
    "OutMsg",
    "ReplyMux",
    "StoredMsg",
    "direct_get_batch",
    "direct_get_last",
    "is_conflict",
    "publish_atomic",
    "publish_one",
    "publish_pipelined",
]

MAX_ATOMIC_BATCH = 1000  # nats-server's default limit of messages in one atomic batch
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_BATCH_DUPLICATE_MSG_ID = 10201
_CONFLICT_CODES = frozenset({ERR_WRONG_LAST_SEQUENCE, ERR_BATCH_DUPLICATE_MSG_ID})

OutMsg = tuple[str, bytes, dict[str, str]]  # subject, payload, headers


@dataclass(frozen=True, slots=True)
class Ack:
    """What the server stored: the sequence of the (last) message, and whether it was a dup."""

    seq: int
    duplicate: bool = False
    count: int = 1


@dataclass(frozen=True, slots=True)
class StoredMsg:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: str


def is_conflict(exc: BaseException) -> bool:
    """True when the server refused an append because of its expectations (a lost race)."""
    return isinstance(exc, APIError) and exc.err_code in _CONFLICT_CODES


def _api_error(err: dict[str, object]) -> APIError:
    code = err.get("code")
    err_code = err.get("err_code")
    return APIError(
        code=int(code) if isinstance(code, int) else None,
        err_code=int(err_code) if isinstance(err_code, int) else None,
        description=str(err.get("description", "")),
    )


def _parse_ack(msg: Msg) -> Ack:
    if msg.headers and msg.headers.get("Status") == "503":
        raise APIError(code=503, description="no stream stores this subject (no responders)")
    resp = json.loads(msg.data)
    if "error" in resp:
        raise _api_error(resp["error"])
    return Ack(
        seq=int(resp["seq"]), duplicate=bool(resp.get("duplicate")), count=resp.get("count", 1)
    )


class ReplyMux:
    """One wildcard inbox subscription that routes replies to waiting requests by token."""

    def __init__(self) -> None:
        self._prefix = ""
        self._waiting: dict[str, asyncio.Queue[Msg] | asyncio.Future[Msg]] = {}
        self._counter = 0

    @property
    def started(self) -> bool:
        return bool(self._prefix)

    async def start(self, nc: Client) -> None:
        prefix = nc.new_inbox()
        await nc.subscribe(prefix + ".*", cb=self._route)
        self._prefix = prefix

    async def _route(self, msg: Msg) -> None:
        waiter = self._waiting.get(msg.subject[len(self._prefix) + 1 :])
        if isinstance(waiter, asyncio.Queue):
            waiter.put_nowait(msg)
        elif waiter is not None and not waiter.done():
            waiter.set_result(msg)

    def _token(self) -> str:
        self._counter += 1
        return str(self._counter)

    def open(self) -> tuple[str, asyncio.Queue[Msg]]:
        """A fresh reply subject and the queue its replies arrive on; :meth:`close` it."""
        token = self._token()
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiting[token] = queue
        return f"{self._prefix}.{token}", queue

    def expect_one(self) -> tuple[str, asyncio.Future[Msg]]:
        """A fresh reply subject for exactly one reply; :meth:`close` it when done."""
        token = self._token()
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return f"{self._prefix}.{token}", future

    def close(self, reply: str) -> None:
        self._waiting.pop(reply[len(self._prefix) + 1 :], None)


async def publish_one(
    nc: Client, mux: ReplyMux, msg: OutMsg, *, timeout: float
) -> Ack:
    """Publish one message and wait for its pub ack (raises APIError on rejection)."""
    subject, payload, headers = msg
    reply, future = mux.expect_one()
    try:
        await nc.publish(subject, payload, reply=reply, headers=headers)
        return _parse_ack(await asyncio.wait_for(future, timeout))
    finally:
        mux.close(reply)


async def publish_pipelined(
    nc: Client, mux: ReplyMux, msgs: Sequence[OutMsg], *, timeout: float
) -> list[Ack | APIError]:
    """Publish every message before awaiting any ack; one ack (or rejection) per message.

    Not atomic: each message is stored or refused on its own, in publish order.
    """
    replies: list[tuple[str, asyncio.Future[Msg]]] = []
    try:
        for subject, payload, headers in msgs:
            reply, future = mux.expect_one()
            replies.append((reply, future))
            await nc.publish(subject, payload, reply=reply, headers=headers)
        await asyncio.wait_for(asyncio.gather(*(f for _, f in replies)), timeout)
        out: list[Ack | APIError] = []
        for _, future in replies:
            try:
                out.append(_parse_ack(future.result()))
            except APIError as exc:
                out.append(exc)
        return out
    finally:
        for reply, _ in replies:
            mux.close(reply)


async def publish_atomic(
    nc: Client, mux: ReplyMux, msgs: Sequence[OutMsg], *, timeout: float
) -> Ack:
    """Publish ``msgs`` as one atomic batch: all stored, in order, or none.

    Only the first message (which opens the batch) and the commit ask for a reply; the
    messages between are fire-and-forget, which the server allows, so a batch costs one
    round trip. The returned ack holds the sequence of the last message; the others
    precede it without gaps.
    """
    if not msgs:
        raise ValueError("an atomic batch needs at least one message")
    if len(msgs) > MAX_ATOMIC_BATCH:
        raise ValueError(f"an atomic batch holds at most {MAX_ATOMIC_BATCH} messages")
    batch_id = uuid.uuid4().hex
    reply, queue = mux.open()
    last = len(msgs)
    try:
        for i, (subject, payload, headers) in enumerate(msgs, 1):
            hdrs = dict(headers)
            hdrs["Nats-Batch-Id"] = batch_id
            hdrs["Nats-Batch-Sequence"] = str(i)
            if i == last:
                hdrs["Nats-Batch-Commit"] = "1"
            await nc.publish(subject, payload, reply=reply if i in (1, last) else "", headers=hdrs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        replies = 1 if last == 1 else 2
        for _ in range(replies):
            msg = await asyncio.wait_for(queue.get(), max(deadline - loop.time(), 0.001))
            if msg.data:  # the empty reply acknowledges the opening message
                ack = _parse_ack(msg)
                if ack.count != last and last > 1:
                    raise APIError(description=f"batch stored {ack.count} of {last} messages")
                return ack
        raise APIError(description="atomic batch got no pub ack")
    finally:
        mux.close(reply)


def _stored(msg: Msg) -> StoredMsg:
    h = msg.headers or {}
    return StoredMsg(
        seq=int(h["Nats-Sequence"]),
        subject=h["Nats-Subject"],
        data=msg.data,
        headers=h,
        time=h.get("Nats-Time-Stamp", ""),
    )


async def direct_get_batch(
    nc: Client,
    mux: ReplyMux,
    stream: str,
    subject_filter: str,
    *,
    start_seq: int = 1,
    start_time: float | None = None,
    batch: int = 256,
    timeout: float,
) -> tuple[list[StoredMsg], int]:
    """Up to ``batch`` messages matching ``subject_filter`` from ``start_seq`` (or time).

    Returns the messages and how many matching messages remain after them. One request,
    answered by the stream's direct-get responders without creating a consumer.
    """
    req: dict[str, object] = {"next_by_subj": subject_filter, "batch": batch}
    if start_time is not None:
        stamp = datetime.fromtimestamp(start_time, tz=UTC)
        req["start_time"] = stamp.isoformat().replace("+00:00", "Z")
    else:
        req["seq"] = max(start_seq, 1)
    reply, queue = mux.open()
    out: list[StoredMsg] = []
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(req).encode(), reply=reply)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await asyncio.wait_for(queue.get(), max(deadline - loop.time(), 0.001))
            status = (msg.headers or {}).get("Status")
            if status is None:
                out.append(_stored(msg))
                continue
            if status == "204":  # end of batch
                return out, int((msg.headers or {}).get("Nats-Num-Pending", "0"))
            if status == "404":  # nothing (more) matches
                return out, 0
            if status == "503":
                raise APIError(code=503, description=f"stream {stream} does not answer direct gets")
            desc = (msg.headers or {}).get("Description", "")
            raise APIError(code=int(status), description=f"direct get on {stream}: {desc}")
    finally:
        mux.close(reply)


async def direct_get_last(
    nc: Client, mux: ReplyMux, stream: str, subject: str, *, timeout: float
) -> StoredMsg | None:
    """The last message stored on ``subject``, or None when there is none."""
    reply, future = mux.expect_one()
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", reply=reply)
        msg = await asyncio.wait_for(future, timeout)
    finally:
        mux.close(reply)
    status = (msg.headers or {}).get("Status")
    if status is None:
        return _stored(msg)
    if status == "404":
        return None
    desc = (msg.headers or {}).get("Description", "")
    raise APIError(code=int(status), description=f"direct get on {stream}: {desc}")
