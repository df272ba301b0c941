"""AsyncProcessor: a JetStream work queue with priorities, retries with backoff, dead letters.

Jobs are :class:`Job` messages on ``mvs.work.<priority>.<task_type>`` in the ``MVS_WORK``
stream (work-queue retention: a job is removed when acked). One durable pull consumer per
priority; the worker always drains ``high`` before ``normal`` before ``low``.

No busy polling: the worker sleeps until a job is published (a core subscription on
``mvs.work.>`` rings a doorbell; JetStream delivers published messages to plain subscribers
too) or one second passes (so a job whose retry delay ended is picked up).

A failed job is negatively acknowledged with a delay from ``async_processor.backoff_s``
(1, 2, 4, 8 s by default); after ``max_deliver`` attempts, or at once if its task type is
unknown or its body does not decode, it goes to the dead-letter stream ``MVS_DLQ``
(``mvs.dlq.async_processor``) with the reason in the ``Mvs-Dlq-Reason`` header, and is
removed from the queue.

Task types: ``call_service`` (call ``payload.service``/``payload.action`` with
``payload.request``: any service work can be deferred through the queue) and whatever
:meth:`AsyncProcessor.register_handler` adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig

from mvs.errors import ServiceCallError
from mvs.metrics import WORK_JOBS
from mvs.rpc import ERROR_HEADER, Empty
from mvs.service import Service, endpoint
from streams.definitions import DLQ_STREAM, WORK_STREAM
from streams.subjects import DLQ_PREFIX, WORK_PREFIX, service_subject

__all__ = ["AsyncProcessor", "Job", "QueueStats", "SubmitReply", "SubmitRequest"]

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Job(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    task_type: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    submitted_at: float = 0.0


class SubmitRequest(msgspec.Struct, frozen=True, kw_only=True):
    task_type: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: str = "normal"
    job_id: str | None = None  # set it to make a submission idempotent


class SubmitReply(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    subject: str
    seq: int
    duplicate: bool = False


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    pending: dict[str, int]
    dead_letters: int
    processed: int
    failed_attempts: int


class _CallService(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    action: str
    request: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout_s: float = 30.0


_job_dec = msgspec.msgpack.Decoder(Job)
_enc = msgspec.msgpack.Encoder()
_DLQ_SUBJECT = f"{DLQ_PREFIX}.async_processor"


class AsyncProcessor(Service):
    """Prioritised JetStream work queue with retries and a dead-letter stream."""

    name = "AsyncProcessor"

    def __init__(self, ctx: Any, **kwargs: Any) -> None:
        super().__init__(ctx, **kwargs)
        self.handlers: dict[str, Handler] = {"call_service": self._call_service}

    def register_handler(self, task_type: str, handler: Handler) -> None:
        """Handle jobs of ``task_type`` with ``await handler(payload)``; raising retries."""
        self.handlers[task_type] = handler

    async def on_start(self) -> None:
        cfg = self.ctx.config.async_processor if self.ctx.config is not None else None
        self.priorities: tuple[str, ...] = cfg.priorities if cfg else ("high", "normal", "low")
        self.max_deliver = cfg.max_deliver if cfg else 5
        self.backoff = cfg.backoff_s if cfg else (1.0, 2.0, 4.0, 8.0)
        ack_wait = cfg.ack_wait_s if cfg else 30.0
        self.processed = 0
        self.failed_attempts = 0
        self._doorbell = asyncio.Event()
        js = self.ctx.js
        self._pulls: dict[str, Any] = {}
        for prio in self.priorities:
            durable = f"async_processor_{prio}"
            self._pulls[prio] = await js.pull_subscribe(
                f"{WORK_PREFIX}.{prio}.>",
                durable=durable,
                stream=WORK_STREAM,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    # one more than max_deliver so the last attempt's failure reaches our
                    # dead-letter code instead of the server silently giving up
                    max_deliver=self.max_deliver + 1,
                ),
            )
        self._bell = await self.ctx.nc.subscribe(f"{WORK_PREFIX}.>", cb=self._ring)
        self.spawn(self._work(), name="async-processor-worker")

    async def on_stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._bell.unsubscribe()
        for pull in self._pulls.values():
            with contextlib.suppress(Exception):
                await pull.unsubscribe()

    async def _ring(self, msg: Any) -> None:
        self._doorbell.set()

    async def _work(self) -> None:
        # a closed connection is closed for good: retrying would loop for ever (and nats-py
        # raises ConnectionClosedError for a cancel that lands in a fetch once it is closed)
        while not self.ctx.nc.is_closed:
            did = False
            for prio in self.priorities:
                msgs = await self._fetch(prio)
                if msgs:
                    for msg in msgs:
                        await self._process(prio, msg)
                    did = True
                    break  # re-check higher priorities before taking more of this one
            if not did:
                self._doorbell.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._doorbell.wait(), 1.0)

    async def _fetch(self, prio: str) -> list[Any]:
        try:
            return list(await self._pulls[prio].fetch(batch=1, timeout=0.05))
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except nats.errors.Error as exc:
            self.log.warning("work fetch failed", extra={"priority": prio, "error": repr(exc)})
            await asyncio.sleep(0.5)
            return []

    async def _process(self, prio: str, msg: Any) -> None:
        attempt = msg.metadata.num_delivered
        try:
            job = _job_dec.decode(msg.data)
        except msgspec.DecodeError as exc:
            await self._dead_letter(msg, "unknown", f"undecodable job: {exc}")
            return
        handler = self.handlers.get(job.task_type)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            await self._dead_letter(msg, job.task_type,
                                    f"unknown task_type {job.task_type!r} (known: {known})")
            return
        try:
            await handler(job.payload)
        except Exception as exc:  # a failing job is retried, then dead-lettered
            self.failed_attempts += 1
            reason = f"{type(exc).__name__}: {exc}"
            if attempt >= self.max_deliver:
                await self._dead_letter(msg, job.task_type,
                                        f"failed {attempt} times; last error {reason}")
                return
            delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)] if self.backoff else 1.0
            WORK_JOBS.labels(job.task_type, "retried").inc()
            self.log.info("job failed; retrying",
                          extra={"job_id": job.job_id, "attempt": attempt, "delay_s": delay,
                                 "error": reason})
            await msg.nak(delay=delay)
            return
        self.processed += 1
        WORK_JOBS.labels(job.task_type, "ok").inc()
        await msg.ack()

    async def _dead_letter(self, msg: Any, task_type: str, reason: str) -> None:
        headers = {
            "Mvs-Dlq-Reason": reason[:1000],
            "Mvs-Dlq-Subject": msg.subject,
            "Mvs-Dlq-Attempts": str(msg.metadata.num_delivered),
            "Nats-Msg-Id": f"dlq-{msg.metadata.sequence.stream}",
        }
        await self.ctx.js.publish(_DLQ_SUBJECT, msg.data, headers=headers, stream=DLQ_STREAM)
        await msg.term()
        WORK_JOBS.labels(task_type if task_type in self.handlers else "unknown",
                         "dead_lettered").inc()
        self.log.warning("job dead-lettered", extra={"subject": msg.subject, "reason": reason})

    async def _call_service(self, payload: dict[str, Any]) -> bytes:
        spec = msgspec.convert(payload, _CallService)
        try:
            msg = await self.ctx.nc.request(
                service_subject(spec.service, spec.action), msgspec.json.encode(spec.request),
                timeout=spec.timeout_s,
            )
        except nats.errors.NoRespondersError as exc:
            raise ServiceCallError(f"{spec.service} is not running", code="503") from exc
        if msg.headers and ERROR_HEADER in msg.headers:
            raise ServiceCallError(f"{spec.service}.{spec.action}: {msg.headers[ERROR_HEADER]}")
        return bytes(msg.data)

    @endpoint("submit", request=SubmitRequest, reply=SubmitReply)
    async def submit(self, req: SubmitRequest) -> SubmitReply:
        if req.priority not in self.priorities:
            raise ValueError(
                f"unknown priority {req.priority!r}; use one of {', '.join(self.priorities)}"
            )
        if not req.task_type or "." in req.task_type or " " in req.task_type:
            raise ValueError("task_type must be one non-empty subject token")
        job = Job(job_id=req.job_id or uuid.uuid4().hex, task_type=req.task_type,
                  payload=req.payload, submitted_at=time.time())
        subject = f"{WORK_PREFIX}.{req.priority}.{req.task_type}"
        ack = await self.ctx.js.publish(subject, _enc.encode(job),
                                        headers={"Nats-Msg-Id": job.job_id})
        return SubmitReply(job_id=job.job_id, subject=subject, seq=ack.seq,
                           duplicate=bool(ack.duplicate))

    @endpoint("stats", request=Empty, reply=QueueStats, record=False)
    async def stats(self, req: Empty) -> QueueStats:
        pending = {}
        for prio, pull in self._pulls.items():
            info = await pull.consumer_info()
            pending[prio] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        dlq = await self.ctx.js.stream_info(DLQ_STREAM)
        return QueueStats(pending=pending, dead_letters=int(dlq.state.messages),
                          processed=self.processed, failed_attempts=self.failed_attempts)

    async def check_health(self) -> dict[str, str]:
        return {"worker": "ok" if self._pulls else "no consumers"}
