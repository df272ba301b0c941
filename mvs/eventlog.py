"""The MVS event log: appending and reading high-volume domain events on ``MVS_EVENTS``.

A small async API over JetStream for services, projections and replay::

    log = EventLog(js)
    ack = await log.append(event)                       # one event, one round trip
    ack = await log.append(event, expected_last_subject_seq=41)   # optimistic concurrency
    res = await log.append_many(events)                 # pipelined, not atomic
    res = await log.append_batch(events)                # atomic: all stored or none
    async for rec in log.read("mvs.evt.memory.>", from_seq=1, limit=100): ...
    async for rec in log.follow("mvs.evt.>", from_seq=n): ...   # catch up, then live

Events are encoded with :func:`streams.catalog.encode_event` on :func:`subject_of` their
entity, with ``event_id`` as ``Nats-Msg-Id``: publishing an event again inside the stream's
duplicate window stores nothing and counts as a duplicate, which is success. Losing an
optimistic-concurrency race raises :class:`mvs.errors.ConcurrencyConflict`.

Reading decodes and upcasts each message (:func:`streams.catalog.decode_event`). A message
that does not decode never stops an iterator: it is handed to ``on_undecodable`` (an
:class:`Undecodable` with its sequence, subject, bytes and the reason) and skipped; without a
callback it is logged at warning level and skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

from mvs.errors import BusError, ConcurrencyConflict, DecodeError
from mvs.eventstore_js import (
    MAX_ATOMIC_BATCH,
    Ack,
    OutMsg,
    ReplyMux,
    direct_get_batch,
    direct_get_last,
    is_conflict,
    publish_atomic,
    publish_one,
    publish_pipelined,
)
from mvs.logs import get_logger
from streams.base import Event
from streams.catalog import decode_event, encode_event, subject_of
from streams.definitions import EVENTS_STREAM
from streams.subjects import EVENTS_PREFIX

__all__ = ["Ack", "AppendResult", "EventLog", "LogRecord", "Undecodable"]

log = get_logger("eventlog")

_PAGE = 1000


class LogRecord(NamedTuple):
    """One stored event: its stream sequence, its subject and the decoded, upcast event."""

    seq: int
    subject: str
    event: Event


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A stored message that is not a valid MVS event, as handed to ``on_undecodable``."""

    seq: int
    subject: str
    data: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Sequences of appended events, in input order; ``duplicates`` were already stored."""

    seqs: tuple[int, ...]
    duplicates: int = 0


UndecodableHandler = Callable[[Undecodable], None]


def _warn(bad: Undecodable) -> None:
    log.warning(
        "skipping undecodable event seq=%d subject=%s: %s", bad.seq, bad.subject, bad.reason
    )


def _conflict(exc: APIError, subject: str) -> ConcurrencyConflict:
    return ConcurrencyConflict(f"append to {subject} lost a race: {exc.description}")


def _bus_error(exc: BaseException, doing: str) -> BusError:
    if isinstance(exc, APIError):
        return BusError(f"{doing}: {exc.description} (code {exc.code}, err {exc.err_code})")
    return BusError(f"{doing}: {exc or type(exc).__name__}")


_TRANSPORT = (asyncio.TimeoutError, TimeoutError, nats.errors.Error)


class EventLog:
    """Append to and read from one event stream (default ``MVS_EVENTS``)."""

    def __init__(
        self, js: JetStreamContext, *, stream: str = EVENTS_STREAM, timeout: float = 10.0
    ) -> None:
        self.js = js
        # Atomic batches and batch direct gets are plain core-NATS requests that nats-py has
        # no helper for, so the log needs the connection under the JetStream context.
        self._nc: Client = js._nc
        self.stream = stream
        self.timeout = timeout
        self._mux = ReplyMux()
        self._mux_lock = asyncio.Lock()

    async def _ready(self) -> ReplyMux:
        if not self._mux.started:
            async with self._mux_lock:
                if not self._mux.started:
                    await self._mux.start(self._nc)
        return self._mux

    @staticmethod
    def _message(event: Event, expected: int | None = None) -> OutMsg:
        headers = {"Nats-Msg-Id": event.event_id}
        if expected is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
        return subject_of(event), encode_event(event), headers

    async def append(self, event: Event, *, expected_last_subject_seq: int | None = None) -> Ack:
        """Store one event; ``expected_last_subject_seq`` (0: the subject must be empty)."""
        msg = self._message(event, expected_last_subject_seq)
        try:
            return await publish_one(self._nc, await self._ready(), msg, timeout=self.timeout)
        except APIError as exc:
            if is_conflict(exc):
                raise _conflict(exc, msg[0]) from exc
            raise _bus_error(exc, f"appending to {msg[0]}") from exc
        except _TRANSPORT as exc:
            raise _bus_error(exc, f"appending to {msg[0]}") from exc

    async def append_many(self, events: Sequence[Event], *, window: int = 4096) -> AppendResult:
        """Store ``events`` pipelined (up to ``window`` acks outstanding); not atomic.

        Each event is stored or refused on its own; if any is refused, ``BusError`` says how
        many, after all others were stored. Re-running the same call is safe (Msg-Id).
        """
        seqs: list[int] = []
        duplicates = 0
        failures: list[str] = []
        mux = await self._ready()
        for start in range(0, len(events), window):
            chunk = [self._message(e) for e in events[start : start + window]]
            try:
                acks = await publish_pipelined(self._nc, mux, chunk, timeout=self.timeout)
            except _TRANSPORT as exc:
                raise _bus_error(exc, f"appending {len(events)} events") from exc
            for (subject, _, _), ack in zip(chunk, acks, strict=True):
                if isinstance(ack, APIError):
                    failures.append(f"{subject}: {ack.description}")
                    seqs.append(0)
                else:
                    seqs.append(ack.seq)
                    duplicates += ack.duplicate
        if failures:
            raise BusError(f"{len(failures)} of {len(events)} events refused, first: {failures[0]}")
        return AppendResult(tuple(seqs), duplicates)

    async def append_batch(
        self, events: Sequence[Event], *, expected: Mapping[str, int] | None = None
    ) -> AppendResult:
        """Store ``events`` atomically (at most 1000): all, in order, or none.

        ``expected`` maps a subject to the sequence its last message must have (0: empty);
        a mismatch refuses the whole batch with ``ConcurrencyConflict``. A batch holding an
        event already stored (same ``event_id``) is refused whole by the server; if the
        whole batch is the one stored last (a retry after a lost ack) that is success, with
        every event counted as a duplicate, otherwise ``ConcurrencyConflict``.
        """
        if not events:
            return AppendResult(())
        if len(events) > MAX_ATOMIC_BATCH:
            raise ValueError(f"append_batch takes at most {MAX_ATOMIC_BATCH} events")
        want = dict(expected or {})
        msgs: list[OutMsg] = []
        for event in events:
            subject = subject_of(event)
            msgs.append(self._message(event, want.pop(subject, None)))
        try:
            ack = await publish_atomic(self._nc, await self._ready(), msgs, timeout=self.timeout)
        except APIError as exc:
            if is_conflict(exc) and exc.err_code != 10201:
                raise _conflict(exc, msgs[0][0]) from exc
            if exc.err_code == 10201:
                stored = await self._stored_batch(msgs)
                if stored is not None:
                    return stored
                raise ConcurrencyConflict(
                    f"batch of {len(msgs)} holds events already stored: {exc.description}"
                ) from exc
            raise _bus_error(exc, f"appending a batch of {len(msgs)}") from exc
        except _TRANSPORT as exc:
            raise _bus_error(exc, f"appending a batch of {len(msgs)}") from exc
        return AppendResult(tuple(range(ack.seq - len(msgs) + 1, ack.seq + 1)))

    async def _stored_batch(self, msgs: list[OutMsg]) -> AppendResult | None:
        """The sequences of ``msgs`` if they are stored as one run ending at their subject's
        last message, as a batch that was stored before its ack got lost would be."""
        mux = await self._ready()
        last = await direct_get_last(self._nc, mux, self.stream, msgs[-1][0], timeout=self.timeout)
        if last is None or last.headers.get("Nats-Msg-Id") != msgs[-1][2]["Nats-Msg-Id"]:
            return None
        first = last.seq - len(msgs) + 1
        if first < 1:
            return None
        stored, _ = await direct_get_batch(
            self._nc, mux, self.stream, ">", start_seq=first, batch=len(msgs), timeout=self.timeout
        )
        ids = [m.headers.get("Nats-Msg-Id") for m in stored]
        if ids != [h["Nats-Msg-Id"] for _, _, h in msgs] or stored[-1].seq != last.seq:
            return None
        return AppendResult(tuple(m.seq for m in stored), duplicates=len(msgs))

    async def last_subject_seq(self, subject: str) -> int:
        """The sequence of the last message on ``subject`` (0 when there is none)."""
        try:
            msg = await direct_get_last(
                self._nc, await self._ready(), self.stream, subject, timeout=self.timeout
            )
        except (APIError, *_TRANSPORT) as exc:
            raise _bus_error(exc, f"reading the last message of {subject}") from exc
        return 0 if msg is None else msg.seq

    async def read(
        self,
        subject_filter: str = f"{EVENTS_PREFIX}.>",
        *,
        from_seq: int = 1,
        from_time: float | None = None,
        limit: int | None = None,
        on_undecodable: UndecodableHandler | None = None,
    ) -> AsyncIterator[LogRecord]:
        """Stored events matching ``subject_filter``, oldest first, up to what is stored now.

        Starts at ``from_seq`` or at the first event stored at or after ``from_time`` (epoch
        seconds). Pages through batch direct gets: no consumer is created.
        """
        mux = await self._ready()
        handler = on_undecodable or _warn
        seq, start_time = from_seq, from_time
        count = 0
        while limit is None or count < limit:
            batch = _PAGE if limit is None else min(_PAGE, limit - count)
            try:
                msgs, pending = await direct_get_batch(
                    self._nc, mux, self.stream, subject_filter,
                    start_seq=seq, start_time=start_time, batch=batch, timeout=self.timeout,
                )
            except (APIError, *_TRANSPORT) as exc:
                raise _bus_error(exc, f"reading {subject_filter} from {self.stream}") from exc
            start_time = None
            for m in msgs:
                try:
                    event = decode_event(m.data)
                except DecodeError as exc:
                    handler(Undecodable(m.seq, m.subject, m.data, str(exc)))
                    continue
                yield LogRecord(m.seq, m.subject, event)
                count += 1
            if not msgs or pending == 0:
                return
            seq = msgs[-1].seq + 1

    async def follow(
        self,
        subject_filter: str = f"{EVENTS_PREFIX}.>",
        *,
        from_seq: int = 1,
        from_time: float | None = None,
        on_undecodable: UndecodableHandler | None = None,
    ) -> AsyncIterator[LogRecord]:
        """Stored events from ``from_seq`` (or ``from_time``), then new ones as they arrive.

        An ordered consumer (ephemeral, flow-controlled, recreated from the next sequence
        after a gap) delivers them in stream order; it ends when the caller stops iterating.
        """
        handler = on_undecodable or _warn
        if from_time is not None:
            stamp = datetime.fromtimestamp(from_time, tz=UTC)
            config = ConsumerConfig(opt_start_time=stamp)
            policy = DeliverPolicy.BY_START_TIME
        else:
            config = ConsumerConfig(opt_start_seq=max(from_seq, 1))
            policy = DeliverPolicy.BY_START_SEQUENCE
        try:
            sub = await self.js.subscribe(
                subject_filter,
                stream=self.stream,
                ordered_consumer=True,
                deliver_policy=policy,
                config=config,
                idle_heartbeat=2.0,
            )
        except (APIError, *_TRANSPORT) as exc:
            raise _bus_error(exc, f"following {subject_filter} on {self.stream}") from exc
        try:
            async for msg in sub.messages:
                seq = msg.metadata.sequence.stream
                try:
                    event = decode_event(msg.data)
                except DecodeError as exc:
                    handler(Undecodable(seq, msg.subject, msg.data, str(exc)))
                    continue
                yield LogRecord(seq, msg.subject, event)
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                log.debug("ordered consumer on %s already gone", subject_filter)
