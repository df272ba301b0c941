"""A lean pipelined JetStream publisher for bulk replay: one reply inbox, acks counted per batch.

``js.publish_async`` creates a future, a semaphore slot, a fresh reply token and a decoded
``PubAck`` per message; for millions of replayed events that bookkeeping costs as much as the
publish itself. Here each message's reply subject names only its batch, the ack handler counts
acks, duplicates and the highest stream sequence per batch (JSON is decoded only for errors),
and the caller awaits a whole batch. The stream semantics are the same: every message is a
JetStream publish with ``Nats-Msg-Id`` and an ack, and a duplicate ack is success.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mvs.errors import BusError

__all__ = ["BatchAcks", "PipelinedPublisher"]

_SEQ = re.compile(rb'"seq":\s*(\d+)')
_DUP = re.compile(rb'"duplicate":\s*true')


@dataclass
class BatchAcks:
    """What the stream answered for one batch."""

    number: int
    sent: int = 0
    acked: int = 0
    duplicates: int = 0
    last_seq: int = 0
    errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def _check(self) -> None:
        if self.closed and self.acked + len(self.errors) >= self.sent:
            self.done.set()


class PipelinedPublisher:
    """Publish with ``Nats-Msg-Id``; await acks a batch at a time (see the module docstring).

    At most ``max_pending`` messages wait for an ack; ``publish`` waits for room beyond that.
    """

    def __init__(self, nc: Client, *, max_pending: int = 16000, ack_timeout: float = 60.0) -> None:
        self.nc = nc
        self.max_pending = max_pending
        self.ack_timeout = ack_timeout
        self.pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._batches: dict[int, BatchAcks] = {}
        self._next = 0
        self._prefix = ""
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox() + "."
        self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def new_batch(self) -> BatchAcks:
        self._next += 1
        batch = BatchAcks(self._next)
        self._batches[batch.number] = batch
        return batch

    async def publish(self, batch: BatchAcks, subject: str, payload: bytes, msg_id: str) -> None:
        while self.pending >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        self.pending += 1
        batch.sent += 1
        await self.nc.publish(
            subject, payload, reply=f"{self._prefix}{batch.number}",
            headers={"Nats-Msg-Id": msg_id},
        )

    async def wait(self, batch: BatchAcks) -> BatchAcks:
        """All acks of ``batch``; BusError if any publish failed or acks stopped coming."""
        batch.closed = True
        batch._check()
        try:
            await asyncio.wait_for(batch.done.wait(), timeout=self.ack_timeout)
        except TimeoutError:
            raise BusError(
                f"JetStream acknowledged {batch.acked} of {batch.sent} messages of a replay "
                f"batch within {self.ack_timeout:.0f}s"
            ) from None
        finally:
            self._batches.pop(batch.number, None)
        if batch.errors:
            raise BusError(
                f"JetStream refused {len(batch.errors)} replayed events: {batch.errors[0]}"
            )
        return batch

    async def _on_ack(self, msg: Msg) -> None:
        self.pending -= 1
        if self.pending < self.max_pending:
            self._room.set()
        try:
            number = int(msg.subject[len(self._prefix):])
        except ValueError:
            return
        batch = self._batches.get(number)
        if batch is None:
            return
        data = msg.data
        m = _SEQ.search(data)
        if m is None or b'"error"' in data:
            batch.errors.append(_error_text(msg))
        else:
            batch.acked += 1
            seq = int(m.group(1))
            if seq > batch.last_seq:
                batch.last_seq = seq
            if _DUP.search(data):
                batch.duplicates += 1
        batch._check()


def _error_text(msg: Msg) -> str:
    if msg.headers and msg.headers.get("Status") == "503":
        return "no stream answers this subject (503 no responders)"
    try:
        err = json.loads(msg.data).get("error", {})
        return f"{err.get('description', 'error')} (code {err.get('err_code', '?')})"
    except (ValueError, AttributeError):
        return msg.data[:200].decode("utf-8", "replace")
