"""The read side of SystemDigitalTwin: the ``twin`` projection's tables, caught up on demand.

The twin does not fold events itself: the ``twin`` projection (``projections/twin.py``) folds
``service``, ``twin``, ``model``, ``flag`` and ``breaker`` events into DuckDB, and
:class:`TwinReader` reads ``services``, ``hosts``, ``models``, ``model_events``, ``flags`` and
``breakers`` through the projection host's query API: the in-process
:class:`~projections.host.ProjectionHost` when the twin runs beside it (the ``core`` process),
else over NATS (``mvs.svc.query.sql``).

Freshness: :meth:`TwinReader.sync` notes the stream's last sequence and waits (briefly) until
the twin projection has nothing left to apply up to it. If it is still behind when the wait
ends, the answer is served anyway and says how far it got (``as_of_seq`` < ``stream_seq``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import Error as JsError

from mvs.errors import ProjectionError
from mvs.services.memory_store import ProjectionReader
from projections import query as q
from streams.definitions import EVENTS_STREAM

__all__ = ["PROJECTION", "Snapshot", "TwinReader"]

PROJECTION = "twin"

_QUERIES: dict[str, str] = {
    "services": "SELECT service, host, status, pid, last_seen_at, health_detail "
                "FROM services ORDER BY service",
    "hosts": "SELECT host, sampled_at, cpu_percent, memory_used_mb, memory_total_mb, "
             "load_average FROM hosts ORDER BY host",
    "models": "SELECT model_id, kind, backend, host, memory_mb, loaded_at "
              "FROM models WHERE loaded ORDER BY model_id",
    # the last measured size of every model ever loaded (a load that measured 0 MB keeps it)
    "sizes": "SELECT model_id, arg_max(memory_mb, seq) AS memory_mb FROM model_events "
             "WHERE kind = 'loaded' AND memory_mb > 0 GROUP BY model_id",
    "flags": "SELECT name, fraction FROM flags ORDER BY name",
    "breakers": "SELECT service, dependency, state, failures, updated_at "
                "FROM breakers ORDER BY service, dependency",
}


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Rows of the twin tables, as of stream sequence ``as_of_seq``."""

    as_of_seq: int
    stream_seq: int
    rows: dict[str, list[dict[str, Any]]]


class _Status(msgspec.Struct):
    projection: str
    last_seq: int
    lag: int | None = None


class TwinReader:
    """Reads the twin projection through ``host`` (in this process) or over NATS."""

    def __init__(
        self, nc: Client, js: JetStreamContext, *, host: Any = None, timeout_s: float = 5.0
    ) -> None:
        self.nc = nc
        self.js = js
        self.host = host
        self.timeout_s = timeout_s
        self._reader = ProjectionReader(nc, host=host, timeout_s=timeout_s)

    async def snapshot(self, *, wait_s: float = 2.0) -> Snapshot:
        """Every twin table, after waiting up to ``wait_s`` for the projection to catch up."""
        as_of, stream_seq = await self.sync(wait_s)
        if self.host is not None:
            # one worker thread for all the reads: they are small and share the connection
            host = self.host
            rows = await asyncio.to_thread(
                lambda: {k: q.from_ipc(host.query(sql)).to_pylist() for k, sql in _QUERIES.items()}
            )
        else:
            tables = await asyncio.gather(*(self._reader.rows(sql) for sql in _QUERIES.values()))
            rows = dict(zip(_QUERIES, tables, strict=True))
        return Snapshot(as_of_seq=as_of, stream_seq=stream_seq, rows=rows)

    async def sync(self, wait_s: float) -> tuple[int, int]:
        """(position reached, stream's last seq): equal once the projection has caught up."""
        try:
            info = await self.js.stream_info(EVENTS_STREAM)
        except (nats.errors.Error, JsError) as exc:
            raise ProjectionError(f"cannot read the {EVENTS_STREAM} stream: {exc!r}") from exc
        target = int(info.state.last_seq)
        deadline = time.monotonic() + wait_s
        delay = 0.002
        while True:
            at, idle = await self.position()
            if at >= target or idle:
                return target, target
            if time.monotonic() >= deadline:
                return at, target
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def position(self) -> tuple[int, bool]:
        """(last seq the twin projection applied, whether nothing is left for it to apply).

        The projection sees only its subjects, so its last seq can stay below the stream's:
        it is caught up when its consumer has nothing pending and nothing unacknowledged
        (acks follow the DuckDB commit).
        """
        if self.host is None:
            return await self._remote_position()
        try:
            return await self.host.position(PROJECTION)
        except (nats.errors.Error, JsError) as exc:
            raise ProjectionError(f"cannot read the projections' consumer: {exc!r}") from exc

    async def _remote_position(self) -> tuple[int, bool]:
        try:
            msg = await self.nc.request(q.STATUS_SUBJECT, b"", timeout=self.timeout_s)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise ProjectionError(
                f"the projection host did not answer {q.STATUS_SUBJECT} ({type(exc).__name__})"
            ) from exc
        if (msg.headers or {}).get(q.STATUS_HEADER) != "ok":
            raise ProjectionError(msg.data.decode(errors="replace"))
        for status in msgspec.json.decode(msg.data, type=list[_Status]):
            if status.projection == PROJECTION:
                return status.last_seq, status.lag == 0
        raise ProjectionError("the projection host does not run the twin projection")
