"""The replay engine: legacy sources in, MVS events out, exactly once, resumable.

For each source: detect its format, hash it, look up its position (:mod:`replay.tracking`),
read its records from there, publish their events pipelined (``publish_async`` with
``Nats-Msg-Id`` = event id), and after each batch's acks record the new position. A record
counts once all its events are acknowledged; ``PubAck.duplicate`` counts as a duplicate
skipped, never as an error. Rejected records are published too (``legacy.rejected.v1``), so
the rejection and its location stay in the log; ``strict`` stops at the first one.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext

from mvs.errors import LegacyFormatError, MvsError
from replay.detect import Source, discover
from replay.model import Reader, Record, event_id
from replay.publisher import PipelinedPublisher
from replay.tracking import Position, Tracker, file_sha256, ids_after, tracking_key
from replay.worker import WireRecord, start_producer, to_wire
from streams.catalog import encode_event, subject_of
from streams.definitions import apply_streams
from streams.events.legacy import ReplayCompleted

__all__ = [
    "Progress",
    "ReplayOptions",
    "ReplayStrictError",
    "SourceResult",
    "in_window",
    "replay",
]

MSG_ID = "Nats-Msg-Id"
PARALLEL_MIN = 20_000  # records; below this, starting a process costs more than it saves


class ReplayStrictError(MvsError, ValueError):
    """``--strict`` and a record was rejected."""


@dataclass(frozen=True)
class ReplayOptions:
    fmt: str | None = None
    dry_run: bool = False
    since: float | None = None
    until: float | None = None
    strict: bool = False
    batch: int = 4000
    parallel: bool = True  # read large sources in a child process (see replay.worker)


@dataclass
class Progress:
    path: Path
    format: str
    done: int
    total: int | None
    started: float


@dataclass
class SourceResult:
    path: str
    format: str
    status: str = "done"  # done | already replayed | resumed | unrecognised | failed | dry run
    records_read: int = 0
    events_written: int = 0
    duplicates: int = 0
    rejected: int = 0
    outside_window: int = 0
    skipped_already_published: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)
    entities: Counter[str] = field(default_factory=Counter)
    last_seq: int = 0
    seconds: float = 0.0
    error: str = ""


def in_window(rec: Record | WireRecord, opts: ReplayOptions) -> bool:
    if opts.since is None and opts.until is None:
        return True
    if rec.at is None:
        return False  # a record without a time is in no time window
    if opts.since is not None and rec.at < opts.since:
        return False
    return not (opts.until is not None and rec.at >= opts.until)


def _total(source: Source) -> int | None:
    count = getattr(source.reader, "count", None)
    return int(count(source.path)) if callable(count) else None


class _Batch:
    def __init__(self, pub: PipelinedPublisher) -> None:
        self.acks = pub.new_batch()
        self.records: list[WireRecord] = []
        self.end = 0  # position after the batch's last record


class _SourceRun:
    def __init__(
        self, js: JetStreamContext | None, pub: PipelinedPublisher | None,
        tracker: Tracker | None, source: Source, opts: ReplayOptions,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.js, self.tracker, self.source, self.opts = js, tracker, source, opts
        self.pub = pub
        self.progress = progress
        self.result = SourceResult(str(source.path), source.format)
        self.known_ids: set[str] = set()
        self.uncertain_end = 0

    async def run(self) -> SourceResult:
        t0 = time.perf_counter()
        src, res = self.source, self.result
        if src.reader is None:
            res.status = "unrecognised"
            res.error = "no legacy format recognised this file"
            return res
        try:
            await self._run()
        except (LegacyFormatError, OSError) as exc:
            res.status, res.error = "failed", str(exc)
        res.seconds = time.perf_counter() - t0
        return res

    async def _run(self) -> None:
        src, res, opts = self.source, self.result, self.opts
        assert src.reader is not None
        if not getattr(src.reader, "replayable", True):
            res.status = "inventory only"
            res.error = "a startup config: see `mvs legacy plan`"
            return
        if opts.dry_run or self.js is None or self.tracker is None:
            res.status = "dry run"
            total = _total(src)
            for i, rec in enumerate(src.reader.read(src.path)):
                self._account(to_wire(rec))
                for ev in rec.events:
                    encode_event(ev)  # the codec must accept what would be published
                    res.events_written += 1
                self._tick(i + 1, total)
            return
        sha = await asyncio.to_thread(file_sha256, src.path)
        key = tracking_key(src.format, sha, opts.since, opts.until)
        pos = await self.tracker.get(key)
        if pos is not None and pos.done:
            res.status = "already replayed"
            res.skipped_already_published = pos.committed
            res.last_seq = pos.stream_seq
            return
        if pos is None:
            pos = Position(path=str(src.path), format=src.format, sha256=sha)
        else:
            res.status = "resumed"
            res.skipped_already_published = pos.committed
            if pos.window:
                self.known_ids = await ids_after(self.js, pos.stream_seq)
                self.uncertain_end = pos.committed + pos.window
        pos.window = 2 * opts.batch
        await self._publish_all(key, pos)
        pos.done = True
        await self._completed(key, pos)
        await self.tracker.put(key, pos)

    def _account(self, rec: WireRecord) -> None:
        res = self.result
        res.records_read += 1
        res.entities[rec.entity] += 1
        for f in rec.findings:
            res.findings[f] += 1
        if rec.rejected:
            res.rejected += 1
            res.reasons[_reason_class(rec.reason)] += 1
            if self.opts.strict:
                raise ReplayStrictError(f"--strict: {rec.location}: rejected: {rec.reason}")

    def _tick(self, done: int, total: int | None) -> None:
        if self.progress is not None and (done % 2000 == 0 or done == total):
            self.progress(Progress(self.source.path, self.source.format, done, total,
                                   time.monotonic()))

    async def _records(
        self, reader: Reader, skip: int, total: int | None
    ) -> AsyncIterator[WireRecord]:
        """The source's records from ``skip`` on; a large one is read by a child process."""
        if not self.opts.parallel or total is None or total - skip < PARALLEL_MIN:
            for rec in reader.read(self.source.path, skip=skip):
                yield to_wire(rec)
            return
        proc, queue = start_producer(reader.format, self.source.path, skip)
        try:
            while True:
                chunk = await asyncio.to_thread(queue.get)
                if chunk is None:
                    return
                if isinstance(chunk, str):
                    raise LegacyFormatError(f"{self.source.path}: reader failed: {chunk}")
                for rec in chunk:
                    yield rec
        finally:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)

    async def _publish_all(self, key: str, pos: Position) -> None:
        pub, src, opts, reader = self.pub, self.source, self.opts, self.source.reader
        assert pub is not None and reader is not None
        total = _total(src)
        inflight: list[_Batch] = []
        batch = _Batch(pub)
        index = pos.committed
        async for rec in self._records(reader, pos.committed, total):
            index += 1
            if not in_window(rec, opts):
                self.result.outside_window += 1
                pos.outside_window += 1
            else:
                self._account(rec)
                for subject, payload, eid in rec.events:
                    if index <= self.uncertain_end and eid in self.known_ids:
                        self.result.duplicates += 1
                        pos.duplicates += 1
                        continue
                    await pub.publish(batch.acks, subject, payload, eid)
                batch.records.append(rec)
            batch.end = index
            if batch.acks.sent >= opts.batch or len(batch.records) >= opts.batch:
                inflight.append(batch)
                batch = _Batch(pub)
                if len(inflight) > 1:
                    await self._settle(inflight.pop(0), key, pos)
            self._tick(index, total)
        inflight.append(batch)
        for b in inflight:
            await self._settle(b, key, pos)

    async def _settle(self, batch: _Batch, key: str, pos: Position) -> None:
        """Await a batch's acks, count them, then durably move the position past it."""
        assert self.tracker is not None and self.pub is not None
        res = self.result
        acks = await self.pub.wait(batch.acks)
        written = acks.acked - acks.duplicates
        res.duplicates += acks.duplicates
        pos.duplicates += acks.duplicates
        res.events_written += written
        pos.events_written += written
        res.last_seq = max(res.last_seq, acks.last_seq)
        for rec in batch.records:
            pos.records_read += 1
            if rec.rejected:
                pos.rejected += 1
                cls = _reason_class(rec.reason)
                pos.reasons[cls] = pos.reasons.get(cls, 0) + 1
        pos.committed = max(pos.committed, batch.end)
        pos.stream_seq = max(pos.stream_seq, res.last_seq)
        await self.tracker.put(key, pos)

    async def _completed(self, key: str, pos: Position) -> None:
        assert self.js is not None
        ev = ReplayCompleted(
            event_id=event_id("replay", "completed", key, ""),
            source=f"mvs-replay:{self.source.path.name}",
            source_format=self.source.format,
            source_path=str(self.source.path),
            records_read=pos.records_read,
            events_written=pos.events_written,
            duplicates=pos.duplicates,
            rejected=pos.rejected,
            summary=dict(pos.reasons),
        )
        ack = await self.js.publish(subject_of(ev), encode_event(ev), headers={MSG_ID: ev.event_id})
        self.result.last_seq = max(self.result.last_seq, ack.seq)
        pos.stream_seq = max(pos.stream_seq, ack.seq)


def _reason_class(reason: str) -> str:
    """Group reasons for the summary: ``importance: 'x' is not a number`` -> its field part."""
    head, sep, _ = reason.partition(":")
    return f"{head}: ..." if sep and len(head) < 40 else reason[:80]


async def replay(
    nc: Client | None,
    sources: list[Path],
    opts: ReplayOptions,
    *,
    progress: Callable[[Progress], None] | None = None,
) -> list[SourceResult]:
    """Replay every legacy file under ``sources``; ``nc=None`` (or dry run) publishes nothing."""
    found = discover(sources, opts.fmt)
    js: JetStreamContext | None = None
    tracker: Tracker | None = None
    pub: PipelinedPublisher | None = None
    if nc is not None and not opts.dry_run:
        js = nc.jetstream(timeout=30.0)
        await apply_streams(js)
        tracker = await Tracker.open(js)
        pub = PipelinedPublisher(nc, max_pending=4 * opts.batch)
        await pub.start()
    results = []
    try:
        for src in found:
            results.append(await _SourceRun(js, pub, tracker, src, opts, progress).run())
    finally:
        if pub is not None:
            await pub.close()
    return results
