"""The read side of MemoryOrchestratorService: SQL over the ``memory`` projection, and decay.

Every read comes from the DuckDB projection (``memories``, ``memory_embeddings``, ...; see
``/work/notes/SCHEMA.md``). The projection is owned by one process (DuckDB allows one
writer); :class:`ProjectionReader` asks it over NATS (``mvs.svc.query.sql``, Arrow IPC) or,
when the service runs in that process, queries its connection directly. The query subject
takes SQL text without parameters, so every value is rendered by :func:`lit`, which quotes
strings the DuckDB way and accepts only finite numbers.

Read-your-writes: a write returns the stream sequence of its event; :meth:`wait_for` blocks
until the memory projection has applied it, so a get right after an add sees the memory.

Decay (legacy MemoryOrchestratorService, FORMATS.md L1): importance falls linearly by a
per-tier rate per day (short 0.1, medium 0.05, long 0.01) since the memory last changed
(``updated_at``); a short memory below 0.4 moves to medium, a medium one below 0.2 to long.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import msgspec
import pyarrow as pa
from nats.aio.client import Client

from mvs.errors import ProjectionError
from mvs.services.memory_api import MemoryRecord, Tier
from projections import query as q

__all__ = [
    "DECAY_PER_DAY",
    "PROJECTION",
    "ProjectionReader",
    "decay",
    "lit",
    "record_from_row",
]

PROJECTION = "memory"
DECAY_PER_DAY: dict[str, float] = {"short": 0.1, "medium": 0.05, "long": 0.01}
_MOVE_BELOW: dict[str, tuple[float, Tier]] = {"short": (0.4, "medium"), "medium": (0.2, "long")}
DAY = 86400.0


def decay(importance: float, tier: str, elapsed_s: float) -> tuple[float, str]:
    """Importance and tier after ``elapsed_s`` seconds of decay (never below 0)."""
    rate = DECAY_PER_DAY.get(tier, DECAY_PER_DAY["short"])
    value = max(0.0, importance - rate * max(0.0, elapsed_s) / DAY)
    move = _MOVE_BELOW.get(tier)
    if move is not None and value < move[0]:
        tier = move[1]
    return round(value, 6), tier


def lit(value: Any) -> str:
    """A SQL literal for ``value``: strings quoted, numbers finite, lists as DuckDB lists."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return repr(float(value)) if isinstance(value, float) else str(int(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(lit(v) for v in value) + "]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def _json(text: Any, default: Any) -> Any:
    if text is None:
        return default
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return default


def record_from_row(row: dict[str, Any]) -> MemoryRecord:
    metadata = _json(row.get("metadata"), {})
    tags = _json(row.get("tags"), [])
    return MemoryRecord(
        memory_id=row["memory_id"],
        content=row.get("content") or "",
        memory_type=row.get("memory_type") or "general",
        tier=row.get("tier") or "short",
        importance=float(row.get("importance") or 0.0),
        access_count=int(row.get("access_count") or 0),
        created_at=row.get("created_at"),
        last_accessed_at=row.get("last_accessed_at"),
        expires_at=row.get("expires_at"),
        metadata=metadata if isinstance(metadata, dict) else {"value": metadata},
        tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        parent_id=row.get("parent_id"),
        session_id=row.get("session_id"),
        updated_at=row.get("updated_at"),
    )


class _Status(msgspec.Struct):
    projection: str
    last_seq: int


class ProjectionReader:
    """Queries the projections; ``host`` (a ``ProjectionHost`` in this process) if given."""

    def __init__(self, nc: Client, *, host: Any = None, timeout_s: float = 10.0) -> None:
        self.nc = nc
        self.host = host
        self.timeout_s = timeout_s

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        return list((await self.table(sql)).to_pylist())

    async def table(self, sql: str) -> pa.Table:
        if self.host is not None:
            data: bytes = await asyncio.to_thread(self.host.query, sql)
            return q.from_ipc(data)
        reply = await self._request(q.QUERY_SUBJECT, sql.encode())
        return q.from_ipc(reply)

    async def position(self) -> int:
        """The stream sequence the memory projection has applied up to."""
        if self.host is not None:
            runner = self.host.runners.get(PROJECTION)
            return int(runner.last_seq) if runner is not None else 0
        data = await self._request(q.STATUS_SUBJECT, b"")
        for status in msgspec.json.decode(data, type=list[_Status]):
            if status.projection == PROJECTION:
                return status.last_seq
        raise ProjectionError(f"the projection host does not run the {PROJECTION} projection")

    async def wait_for(self, seq: int, *, timeout_s: float = 10.0) -> None:
        """Return once the memory projection has applied stream sequence ``seq``."""
        if seq <= 0:
            return
        deadline = time.monotonic() + timeout_s
        delay = 0.002
        while (at := await self.position()) < seq:
            if time.monotonic() > deadline:
                raise ProjectionError(
                    f"the {PROJECTION} projection did not reach seq {seq} in {timeout_s} s "
                    f"(it is at {at})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _request(self, subject: str, data: bytes) -> bytes:
        import nats.errors

        try:
            msg = await self.nc.request(subject, data, timeout=self.timeout_s)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise ProjectionError(
                f"the projection host did not answer {subject} ({type(exc).__name__}); "
                "is the core process running?"
            ) from exc
        if (msg.headers or {}).get(q.STATUS_HEADER) != "ok":
            raise ProjectionError(msg.data.decode(errors="replace"))
        return bytes(msg.data)
