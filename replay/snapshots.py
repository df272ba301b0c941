"""JetStream stream snapshots and restores over the raw JetStream API.

nats-py has no snapshot API, so this speaks the protocol the ``nats`` CLI (jsm.go) uses:

* **Snapshot**: subscribe to an inbox, then request ``$JS.API.STREAM.SNAPSHOT.<stream>`` with
  ``{"deliver_subject": inbox, "no_consumers": ..., "chunk_size": ..., "jsck": ...}``. The
  reply carries the stream's ``config`` and ``state``; the server then sends the snapshot (an
  S2-compressed tar of the stream's store) to the inbox in chunks. A chunk with a reply subject
  must be answered with an empty message: that is the server's flow-control window. An empty
  message ends the snapshot; it carries a ``Status`` header (204 when all went well, an error
  code and description otherwise).
* **Restore**: request ``$JS.API.STREAM.RESTORE.<stream>`` with ``{"config", "state"}`` from
  the snapshot; the reply names a ``deliver_subject``. Each chunk is sent there as a request
  (the server acknowledges each one), and an empty request ends the upload; its reply is a
  ``stream_create_response`` with the restored state. The stream must not exist.

A restored stream keeps every message with its sequence, time, subject and headers
(``Nats-Msg-Id`` included); only the duplicate-detection window starts empty.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from mvs.errors import BusError

__all__ = ["RestoredStream", "StreamSnapshot", "restore_stream", "snapshot_stream"]

_API_TIMEOUT_S = 10.0
# A snapshot that sends nothing for this long is dead (the server sends steadily otherwise).
_STALL_TIMEOUT_S = 30.0
_CHUNK = 128 * 1024


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """A stream snapshot written to ``path``; ``meta`` is the server's config and state."""

    stream: str
    path: Path
    sha256: str
    size: int
    meta: dict[str, Any]

    @property
    def messages(self) -> int:
        return int(self.meta.get("state", {}).get("messages", 0))

    @property
    def last_seq(self) -> int:
        return int(self.meta.get("state", {}).get("last_seq", 0))


@dataclass(frozen=True, slots=True)
class RestoredStream:
    stream: str
    messages: int
    first_seq: int
    last_seq: int


async def _api(nc: Client, subject: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One JetStream API request; an error reply becomes a :class:`BusError` naming it."""
    try:
        msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise BusError(f"{subject}: no answer from JetStream ({type(exc).__name__})") from exc
    return _parse_reply(subject, msg.data)


def _parse_reply(subject: str, data: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise BusError(f"{subject}: JetStream reply is not JSON: {data[:80]!r}") from exc
    if not isinstance(reply, dict):
        raise BusError(f"{subject}: unexpected JetStream reply {data[:80]!r}")
    error = reply.get("error")
    if error:
        code = error.get("err_code") or error.get("code")
        raise BusError(f"{subject}: {error.get('description', error)} (code {code})")
    return reply


async def snapshot_stream(
    nc: Client,
    stream: str,
    path: Path,
    *,
    chunk_size: int = _CHUNK,
    check_messages: bool = False,
    include_consumers: bool = False,
) -> StreamSnapshot:
    """Write a snapshot of ``stream`` to ``path`` and return its digest and metadata.

    ``check_messages`` asks the server to verify every message checksum first (``jsck``).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    digest = hashlib.sha256()
    size = 0
    last_chunk = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    out = path.open("wb")

    async def on_chunk(msg: Msg) -> None:
        nonlocal size, last_chunk
        if done.done():
            return
        last_chunk = time.monotonic()
        if not msg.data:
            headers = msg.headers or {}
            status = headers.get("Status", "204")
            if status != "204":
                reason = headers.get("Description", "") or status
                done.set_exception(BusError(f"snapshot of stream {stream} failed: {reason}"))
            else:
                done.set_result(None)
            return
        try:
            out.write(msg.data)
        except OSError as exc:
            done.set_exception(BusError(f"cannot write snapshot of {stream} to {path}: {exc}"))
            return
        digest.update(msg.data)
        size += len(msg.data)
        if msg.reply:
            await nc.publish(msg.reply, b"")

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_chunk, pending_msgs_limit=-1, pending_bytes_limit=-1)
    try:
        meta = await _api(
            nc,
            f"$JS.API.STREAM.SNAPSHOT.{stream}",
            {
                "deliver_subject": inbox,
                "no_consumers": not include_consumers,
                "chunk_size": chunk_size,
                "jsck": check_messages,
            },
            _API_TIMEOUT_S,
        )
        while not done.done():
            await asyncio.wait({done}, timeout=1.0)
            if not done.done() and time.monotonic() - last_chunk > _STALL_TIMEOUT_S:
                raise BusError(
                    f"snapshot of stream {stream} stalled: nothing received for "
                    f"{_STALL_TIMEOUT_S:.0f} s after {size} bytes"
                )
        done.result()
    finally:
        await sub.unsubscribe()
        out.close()
    meta.pop("type", None)
    return StreamSnapshot(stream, path, digest.hexdigest(), size, meta)


async def restore_stream(
    nc: Client,
    stream: str,
    path: Path,
    meta: dict[str, Any],
    *,
    chunk_size: int = _CHUNK,
    finish_timeout: float = 600.0,
) -> RestoredStream:
    """Upload the snapshot at ``path`` as stream ``stream`` (which must not exist)."""
    reply = await _api(
        nc,
        f"$JS.API.STREAM.RESTORE.{stream}",
        {"config": meta.get("config", {}), "state": meta.get("state", {})},
        _API_TIMEOUT_S,
    )
    deliver = reply.get("deliver_subject")
    if not deliver:
        raise BusError(f"restore of stream {stream}: JetStream gave no deliver subject")
    with path.open("rb") as src:
        while chunk := src.read(chunk_size):
            try:
                ack = await nc.request(deliver, chunk, timeout=_API_TIMEOUT_S)
            except nats.errors.TimeoutError as exc:
                raise BusError(f"restore of stream {stream}: a chunk was not acknowledged") from exc
            if ack.data:
                _parse_reply(f"restore of stream {stream}", ack.data)
    try:
        final = await nc.request(deliver, b"", timeout=finish_timeout)
    except nats.errors.TimeoutError as exc:
        raise BusError(f"restore of stream {stream}: the server did not finish in time") from exc
    state = _parse_reply(f"restore of stream {stream}", final.data).get("state", {})
    return RestoredStream(
        stream,
        int(state.get("messages", 0)),
        int(state.get("first_seq", 0)),
        int(state.get("last_seq", 0)),
    )
