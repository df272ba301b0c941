"""Appending stored events to JetStream with optimistic concurrency per aggregate.

The server enforces the order: the first message of each aggregate (subject) in an append
says which stream sequence it expects to be that subject's last one. The appender keeps,
per subject, the last version and sequence it has seen (from its own appends and reads) so
that the usual load-change-save cycle costs one round trip. A subject it has not seen is
assumed new (expected sequence 0); when the server disagrees, the appender reads the
subject's last message and decides: the versions still follow on (retry with the true
sequence) or they conflict (``IntegrityError``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

import nats.errors
from eventsourcing.persistence import DataError, IntegrityError, OperationalError, StoredEvent
from nats.js.errors import APIError

from mvs.eventstore_js import (
    MAX_ATOMIC_BATCH,
    OutMsg,
    direct_get_batch,
    direct_get_last,
    is_conflict,
    publish_atomic,
    publish_one,
)
from mvs.eventstore_runtime import NatsRuntime, StoreNames
from streams.subjects import untoken

__all__ = ["Appender"]

_MAX_ATTEMPTS = 5
_CACHE_SIZE = 100_000
# No ack within the timeout: the append may or may not be stored (a closed connection, by
# contrast, never sent it and is reported at once).
_LOST_ACK = (asyncio.TimeoutError, TimeoutError, nats.errors.TimeoutError)

# The last (version, stream sequence) of a subject; version None: the subject is empty.
_Last = tuple[int | None, int]


class Appender:
    """Turns ``insert_events`` into JetStream publishes; runs on the runtime's loop only."""

    def __init__(self, runtime: NatsRuntime, names: StoreNames, *, contiguous: bool) -> None:
        self.runtime = runtime
        self.names = names
        # Events of an aggregate follow each other by one; snapshots only need to increase.
        self.contiguous = contiguous
        self._last: OrderedDict[str, _Last] = OrderedDict()

    def remember(self, subject: str, version: int | None, seq: int) -> None:
        self._last[subject] = (version, seq)
        self._last.move_to_end(subject)
        if len(self._last) > _CACHE_SIZE:
            self._last.popitem(last=False)

    def _follows(self, last_version: int | None, first: int) -> bool:
        if last_version is None:
            return True
        return first == last_version + 1 if self.contiguous else first > last_version

    async def _refresh(self, subject: str) -> _Last:
        rt = self.runtime
        msg = await direct_get_last(rt.nc, rt.mux, self.names.stream, subject, timeout=rt.timeout)
        if msg is None:
            self.remember(subject, None, 0)
        else:
            self.remember(subject, int(msg.headers["Es-Version"]), msg.seq)
        return self._last[subject]

    def _plan(self, events: Sequence[StoredEvent]) -> tuple[list[str], dict[str, int]]:
        """Subjects in event order and each subject's first version; checks the versions."""
        if len(events) > MAX_ATOMIC_BATCH:
            raise DataError(
                f"an atomic append holds at most {MAX_ATOMIC_BATCH} events, got {len(events)}"
            )
        subjects: list[str] = []
        first: dict[str, int] = {}
        prev: dict[str, int] = {}
        for event in events:
            subject = self.names.subject(event.originator_id)
            subjects.append(subject)
            version = event.originator_version
            if subject in prev and not self._follows(prev[subject], version):
                raise IntegrityError(
                    f"versions of aggregate {event.originator_id} in one append do not "
                    f"follow on: {prev[subject]} then {version}"
                )
            first.setdefault(subject, version)
            prev[subject] = version
        return subjects, first

    def _messages(
        self, events: Sequence[StoredEvent], subjects: list[str], expected: dict[str, int]
    ) -> list[OutMsg]:
        out: list[OutMsg] = []
        seen: set[str] = set()
        skip = len(self.names.prefix) + 1
        for event, subject in zip(events, subjects, strict=True):
            headers = {
                "Nats-Msg-Id": f"{subject[skip:]}/{event.originator_version}",
                "Es-Version": str(event.originator_version),
                "Es-Topic": event.topic,
            }
            if subject not in seen:
                # Only a subject's first message in a batch may carry the expectation.
                seen.add(subject)
                headers["Nats-Expected-Last-Subject-Sequence"] = str(expected[subject])
            if isinstance(event.originator_id, str) and untoken(subject.rsplit(".", 1)[1]) is None:
                # The subject holds only a hash of a long id: keep the id in a header, which
                # cannot carry line breaks.
                if "\r" in event.originator_id or "\n" in event.originator_id:
                    raise DataError("a long originator id must not contain line breaks")
                headers["Es-Id"] = event.originator_id
            out.append((subject, event.state, headers))
        return out

    async def append(self, events: Sequence[StoredEvent]) -> list[int]:
        """Store ``events`` atomically; return their stream sequences."""
        subjects, first = self._plan(events)
        lost_ack = False
        for _ in range(_MAX_ATTEMPTS):
            expected: dict[str, int] = {}
            for subject, version in first.items():
                last = self._last.get(subject)
                if last is not None and not self._follows(last[0], version):
                    last = await self._refresh(subject)  # what we remembered may be stale
                    if not self._follows(last[0], version):
                        if lost_ack:
                            found = await self._already_stored(events, subjects)
                            if found is not None:
                                return found
                        raise IntegrityError(
                            f"aggregate {self.names.originator(subject, {})} is at version "
                            f"{last[0]}: cannot append version {version}"
                        )
                expected[subject] = 0 if last is None else last[1]
            msgs = self._messages(events, subjects, expected)
            rt = self.runtime
            try:
                if len(msgs) == 1:
                    ack = await publish_one(rt.nc, rt.mux, msgs[0], timeout=rt.timeout)
                else:
                    ack = await publish_atomic(rt.nc, rt.mux, msgs, timeout=rt.timeout)
            except APIError as exc:
                if not is_conflict(exc):
                    raise
                await asyncio.gather(*(self._refresh(s) for s in first))
                continue
            except _LOST_ACK:
                # The append may or may not be stored: retry it; Msg-Id and the expected
                # sequence make sure it is stored at most once.
                lost_ack = True
                continue
            if ack.duplicate:
                await asyncio.gather(*(self._refresh(s) for s in first))
                continue
            seqs = list(range(ack.seq - len(msgs) + 1, ack.seq + 1))
            for event, subject, seq in zip(events, subjects, seqs, strict=True):
                self.remember(subject, event.originator_version, seq)
            return seqs
        raise OperationalError(f"append to {self.names.stream} gave up after {_MAX_ATTEMPTS} tries")

    async def _already_stored(
        self, events: Sequence[StoredEvent], subjects: list[str]
    ) -> list[int] | None:
        """The sequences of ``events`` if exactly these are stored (our lost-ack retry)."""
        rt = self.runtime
        stored: dict[tuple[str, int], tuple[int, str, bytes]] = {}
        for subject in dict.fromkeys(subjects):
            seq = 1
            while True:
                msgs, pending = await direct_get_batch(
                    rt.nc, rt.mux, self.names.stream, subject,
                    start_seq=seq, batch=1000, timeout=rt.timeout,
                )
                for m in msgs:
                    key = (subject, int(m.headers["Es-Version"]))
                    stored[key] = (m.seq, m.headers["Es-Topic"], m.data)
                if not msgs or pending == 0:
                    break
                seq = msgs[-1].seq + 1
        seqs = []
        for event, subject in zip(events, subjects, strict=True):
            hit = stored.get((subject, event.originator_version))
            if hit is None or hit[1] != event.topic or hit[2] != event.state:
                return None
            seqs.append(hit[0])
        return seqs
