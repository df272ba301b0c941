"""Rebuild a projection from sequence 0 beside the live tables, then swap it in atomically.

The new tables get the suffix ``__rebuild`` (``memories__rebuild``) and their own consumer
and position row. When the rebuild has caught up with the stream (and the live projection,
which is paused meanwhile, has too), both are checksummed and the new tables replace the old
ones by ``DROP`` + ``ALTER TABLE ... RENAME`` in ONE transaction: a reader sees the old view
or the new one, never a half-built one.
"""

from __future__ import annotations

import contextlib
import time

import duckdb
import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from projections.base import checksum
from projections.registry import projection
from projections.runner import BATCH, ProjectionRunner, transaction
from streams.definitions import EVENTS_STREAM

__all__ = ["REBUILD_SUFFIX", "RebuildReport", "projection_checksums", "rebuild"]

REBUILD_SUFFIX = "__rebuild"


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    projection: str
    last_seq: int
    events: int
    seconds: float
    # table -> (rows, hash) of the old and the rebuilt tables, taken at the same position
    old: dict[str, tuple[int, int]]
    new: dict[str, tuple[int, int]]

    @property
    def identical(self) -> bool:
        return self.old == self.new


def projection_checksums(
    con: duckdb.DuckDBPyConnection, name: str, suffix: str = ""
) -> dict[str, tuple[int, int]]:
    """Checksums of a projection's tables and of its dead letters (without their times)."""
    proj = projection(name, suffix)
    out = {t: checksum(con, proj.t(t)) for t in proj.owned_tables()}
    row = con.execute(
        "SELECT count(*), coalesce(sum(hash(seq, subject, reason, raw)::HUGEINT), 0) "
        "FROM dead_letters WHERE projection = ?",
        [proj.position_name],
    ).fetchall()[0]
    assert row is not None
    out["dead_letters"] = (int(row[0]), int(row[1]))
    return out


def _drop_leftovers(con: duckdb.DuckDBPyConnection, name: str) -> None:
    proj = projection(name, REBUILD_SUFFIX)
    with transaction(con):
        for table in proj.owned_tables():
            con.execute(f"DROP TABLE IF EXISTS {proj.t(table)}")
        for table in ("dead_letters", "projection_positions"):
            con.execute(f"DELETE FROM {table} WHERE projection = ?", [proj.position_name])


def _swap(con: duckdb.DuckDBPyConnection, name: str) -> None:
    new = projection(name, REBUILD_SUFFIX)
    tmp = new.position_name
    with transaction(con):
        for table in new.owned_tables():
            con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(f"ALTER TABLE {new.t(table)} RENAME TO {table}")
        con.execute("DELETE FROM dead_letters WHERE projection = ?", [name])
        con.execute("UPDATE dead_letters SET projection = ? WHERE projection = ?", [name, tmp])
        con.execute("DELETE FROM projection_positions WHERE projection = ?", [name])
        con.execute(
            "INSERT INTO projection_positions SELECT ?, last_seq, updated_at "
            "FROM projection_positions WHERE projection = ?",
            [name, tmp],
        )
        con.execute("DELETE FROM projection_positions WHERE projection = ?", [tmp])


async def rebuild(
    db: duckdb.DuckDBPyConnection,
    js: JetStreamContext,
    live: ProjectionRunner,
    *,
    batch: int = BATCH,
) -> RebuildReport:
    """Rebuild ``live``'s projection; ``live`` must not be running (its loop halted)."""
    name = live.projection.name
    con = db.cursor()
    _drop_leftovers(con, name)
    fresh = ProjectionRunner(
        projection(name, REBUILD_SUFFIX), db, js, batch=batch, decoder=live.decoder,
        executor=live.executor,
    )
    fresh.prepare()
    await fresh.subscribe()
    started = time.perf_counter()
    try:
        await fresh.drain()
        # Compare at one position: drain both until neither finds anything new. A position
        # may lie past the last event of the projection's subjects (a runner of the host's
        # feed stores where the log stood), so both then take the higher of the two.
        for _ in range(100):
            before = (live.last_seq, live.events_applied, fresh.last_seq, fresh.events_applied)
            await live.drain()
            await fresh.drain()
            if before == (live.last_seq, live.events_applied, fresh.last_seq,
                          fresh.events_applied):
                break
        at = max(live.last_seq, fresh.last_seq)
        live.advance(at)
        fresh.advance(at)
        seconds = time.perf_counter() - started
        old = projection_checksums(con, name)
        new = projection_checksums(con, name, REBUILD_SUFFIX)
        last_seq = fresh.last_seq
        _swap(con, name)
        live.reload()
    finally:
        await fresh.close()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(EVENTS_STREAM, fresh.durable)
    return RebuildReport(
        projection=name,
        last_seq=last_seq,
        events=fresh.events_applied,
        seconds=seconds,
        old=old,
        new=new,
    )
