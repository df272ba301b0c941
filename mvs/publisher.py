"""Publishing events to the log: immediately for interactive paths, batched for background ones.

The plan's ``message_bus_config`` (``protocol: msgpack``, ``batch_size: 100``,
``batch_timeout_ms: 50``) applies to *background* events: request bookkeeping, heartbeats'
health changes, host samples, breaker changes. They are queued by :meth:`EventPublisher.emit`
(synchronous, never blocks the caller) and flushed when ``batch_size`` events are waiting or
``batch_timeout_ms`` after the first one arrived, whichever comes first. A flush is pipelined:
every message of the batch goes out on the one connection before any acknowledgement is
awaited, so a batch costs about one round trip instead of one per event.

*Interactive* paths (a request a user waits on) call :meth:`EventPublisher.publish`, which
sends at once and awaits the acknowledgement, so batching never delays a user.

Every event carries its ``event_id`` as ``Nats-Msg-Id``: a retried flush (after a timeout or a
reconnect) is deduplicated by the stream, so retrying is always safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from mvs.errors import BusError
from mvs.logs import get_logger
from mvs.metrics import BUS_BATCH_SIZE, BUS_EVENTS, BUS_FLUSH_SECONDS
from mvs.tasks import cancel_and_wait
from streams.base import Event
from streams.catalog import encode_event, subject_of

__all__ = ["EventPublisher"]

log = get_logger("publisher")

_ACK_TIMEOUT_S = 5.0
_RETRY_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)
# how long close() waits for the queue to drain: with the server gone, the retries above
# would hold a stopping process for ~25 s per batch
_CLOSE_TIMEOUT_S = 5.0


class _Outgoing(NamedTuple):
    """A background event, encoded when it was emitted."""

    subject: str
    data: bytes
    msg_id: str


def _encoded(event: Event) -> _Outgoing:
    try:
        return _Outgoing(subject_of(event), encode_event(event), event.event_id)
    except Exception as exc:  # msgspec's TypeError/EncodeError, a key that is no subject
        raise BusError(f"cannot encode {event.type_tag} event: {exc}") from exc


class EventPublisher:
    """Append events to ``MVS_EVENTS``: :meth:`publish` now, :meth:`emit` in batches.

    ``max_pending`` bounds memory while the server is away: beyond it the oldest background
    events are dropped (counted in ``mvs_bus_events_total{outcome="dropped"}`` and logged).
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        batch_size: int = 100,
        batch_timeout_ms: float = 50.0,
        max_pending: int = 10_000,
    ) -> None:
        if batch_size < 1 or batch_timeout_ms < 0:
            raise ValueError("batch_size must be >= 1 and batch_timeout_ms >= 0")
        self._js = js
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_ms / 1000.0
        self.max_pending = max_pending
        self._pending: list[_Outgoing] = []
        self._first_at = 0.0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._sending = 0  # events of the batch on its way

    async def publish(self, event: Event, *, headers: dict[str, str] | None = None) -> PubAck:
        """Append one event now and wait for the stream's acknowledgement."""
        hdrs = {"Nats-Msg-Id": event.event_id, **(headers or {})}
        out = _encoded(event)
        try:
            ack = await self._js.publish(out.subject, out.data, headers=hdrs,
                                         timeout=_ACK_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            BUS_EVENTS.labels("interactive", "error").inc()
            raise BusError(f"could not append {event.type_tag} event: {exc!r}") from exc
        BUS_EVENTS.labels("interactive", "ok").inc()
        return ack

    def emit(self, event: Event) -> None:
        """Queue a background event; it is appended within ``batch_timeout_ms``.

        Must be called from the event loop's thread; needs a running loop.
        """
        if self._closing:
            raise BusError("the publisher is closed")
        out = _encoded(event)  # here: an event that can never be sent fails its caller
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(out)
        self._idle.clear()
        if len(self._pending) > self.max_pending:
            dropped = len(self._pending) - self.max_pending
            del self._pending[:dropped]
            BUS_EVENTS.labels("background", "dropped").inc(dropped)
            log.warning("event log unreachable: dropped oldest background events",
                        extra={"dropped": dropped})
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mvs-publisher")
        self._wake.set()
        if len(self._pending) >= self.batch_size:
            self._full.set()

    def emit_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.emit(event)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Wait until every event queued so far is acknowledged (or dropped)."""
        if self._pending:
            self._full.set()
        await self._idle.wait()

    async def close(self, timeout: float = _CLOSE_TIMEOUT_S) -> None:
        """Flush what is queued, for at most ``timeout`` seconds, then stop the background
        task. Events still not appended then (the server is gone) are logged and counted as
        dropped."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            left = len(self._pending) + self._sending
            BUS_EVENTS.labels("background", "dropped").inc(left)
            log.error("closing with background events the event log did not acknowledge",
                      extra={"dropped": left, "timeout_s": timeout})
        self._closing = True
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._pending:
                self._wake.clear()
                self._idle.set()
                continue
            wait = self.batch_timeout_s - (time.monotonic() - self._first_at)
            if wait > 0 and len(self._pending) < self.batch_size:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
            self._full.clear()
            batch = self._pending[: self.batch_size]
            del self._pending[: len(batch)]
            if self._pending:
                self._first_at = time.monotonic()
            self._sending = len(batch)
            try:
                await self._send(batch)
            except Exception:  # a bug here must not stop every later event, or hang flush()
                BUS_EVENTS.labels("background", "dropped").inc(len(batch))
                log.exception("background publish failed; batch dropped",
                              extra={"dropped": len(batch)})
            self._sending = 0
            if not self._pending:
                self._wake.clear()
                self._idle.set()

    async def _send(self, batch: list[_Outgoing]) -> None:
        started = time.perf_counter()
        todo = batch
        for attempt, backoff in enumerate((*_RETRY_BACKOFF_S, None)):
            todo = await self._send_once(todo)
            if not todo:
                break
            if backoff is None:
                BUS_EVENTS.labels("background", "dropped").inc(len(todo))
                log.error("dropped background events after retries",
                          extra={"dropped": len(todo), "attempts": attempt + 1})
                break
            await asyncio.sleep(backoff)
        BUS_BATCH_SIZE.observe(len(batch))
        BUS_FLUSH_SECONDS.observe(time.perf_counter() - started)

    async def _send_once(self, batch: list[_Outgoing]) -> list[_Outgoing]:
        """Pipeline the batch; return the events that were not acknowledged."""
        futures: list[asyncio.Future[PubAck]] = []
        sent: list[_Outgoing] = []
        try:
            for out in batch:
                fut = await self._js.publish_async(
                    out.subject,
                    out.data,
                    headers={"Nats-Msg-Id": out.msg_id},
                    wait_stall=_ACK_TIMEOUT_S,
                )
                futures.append(fut)
                sent.append(out)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("background publish failed", extra={"error": repr(exc)})
        failed = batch[len(sent) :]  # the ones after a send error never left
        if futures:
            _done, not_done = await asyncio.wait(futures, timeout=_ACK_TIMEOUT_S)
            for fut in not_done:
                fut.cancel()
            for out, fut in zip(sent, futures, strict=True):
                if fut in not_done or fut.cancelled() or fut.exception() is not None:
                    failed.append(out)
        ok = len(batch) - len(failed)
        if ok:
            BUS_EVENTS.labels("background", "ok").inc(ok)
        if failed:
            BUS_EVENTS.labels("background", "error").inc(len(failed))
        return failed
