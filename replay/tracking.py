"""Where a replay stands, kept durably in JetStream next to the events it published.

One JetStream KV bucket (``MVS_REPLAY``) holds one entry per (format, file content, time
window): how many of the source's records are fully published (``committed``: every event
of them acknowledged by the stream), the stream sequence reached, the cumulative counts, and
how many records past ``committed`` may have been in flight (``window``). The engine writes
an entry only after the acks of the records it covers, so after a SIGKILL at any point:

* records before ``committed`` are in the log: the next run skips them;
* records in ``[committed, committed + window)`` may or may not be: the next run re-reads the
  stream after ``stream_seq`` (headers only) and skips the event ids it finds there, so it
  duplicates nothing even long after JetStream's duplicate window has passed;
* records after that were never published.

Keying by content hash means an edited legacy file is a new source (with new event ids only
for the records that changed, see :func:`replay.model.event_id`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from mvs.errors import BusError
from streams.definitions import EVENTS_STREAM
from streams.subjects import domain_filter

__all__ = [
    "BUCKET", "Position", "Tracker", "file_sha256", "ids_after", "read_log_to_end",
    "tracking_key",
]

BUCKET = "MVS_REPLAY"


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tracking_key(fmt: str, sha: str, since: float | None, until: float | None) -> str:
    window = "all" if since is None and until is None else hashlib.sha256(
        f"{since}|{until}".encode()
    ).hexdigest()[:12]
    return f"{fmt}.{sha[:40]}.{window}"


@dataclass
class Position:
    path: str
    format: str
    sha256: str
    committed: int = 0
    window: int = 0
    stream_seq: int = 0
    done: bool = False
    records_read: int = 0
    events_written: int = 0
    duplicates: int = 0
    rejected: int = 0
    outside_window: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    updated_at: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Position:
        raw = json.loads(data)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Tracker:
    """Replay positions in the ``MVS_REPLAY`` bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> Tracker:
        try:
            kv = await js.key_value(BUCKET)
        except (BucketNotFoundError, NotFoundError):
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=BUCKET,
                    description="mvs replay: per legacy source, the records durably published",
                    history=1,
                    storage=StorageType.FILE,
                )
            )
        return cls(kv)

    async def get(self, key: str) -> Position | None:
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        return Position.decode(entry.value) if entry.value else None

    async def put(self, key: str, pos: Position) -> None:
        pos.updated_at = time.time()
        try:
            await self.kv.put(key, pos.encode())
        except (nats.errors.Error, OSError) as exc:
            raise BusError(f"cannot record replay position {key}: {exc}") from exc


async def read_log_to_end(
    js: JetStreamContext, *, from_seq: int = 1, headers_only: bool = False, stall: float = 30.0
) -> AsyncGenerator[Msg, None]:
    """Every event stored from ``from_seq`` up to the log's last sequence when called.

    It ends at that sequence (or where nothing is pending), never at a pause: a loaded machine
    can pause longer than any idle wait, and a read that took the pause for the end would
    verify half a log or replay events twice. No message for ``stall`` seconds is an error
    that says how far the read got.
    """
    info = await js.stream_info(EVENTS_STREAM)
    last = info.state.last_seq
    if last < from_seq or not info.state.messages:
        return
    sub = await js.subscribe(
        domain_filter(),
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=from_seq,
            headers_only=headers_only,
        ),
    )
    read = 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=stall)
            except (TimeoutError, nats.errors.TimeoutError):
                raise BusError(
                    f"the event log stopped delivering: no message for {stall:g} s after "
                    f"{read} events from sequence {from_seq} (reading up to {last})"
                ) from None
            read += 1
            yield msg
            if msg.metadata.sequence.stream >= last or msg.metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


async def ids_after(js: JetStreamContext, stream_seq: int, *, stall: float = 30.0) -> set[str]:
    """The ``Nats-Msg-Id`` of every event stored after ``stream_seq`` (headers only)."""
    return {
        msg.headers["Nats-Msg-Id"]
        async for msg in read_log_to_end(js, from_seq=stream_seq + 1, headers_only=True,
                                         stall=stall)
        if msg.headers and "Nats-Msg-Id" in msg.headers
    }
