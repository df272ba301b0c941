"""Streaming over legacy SQLite databases: one table mapping per table, rows paged by rowid.

A legacy database of millions of rows never sits in memory: rows are fetched ``CHUNK`` at a
time, keyed by ``rowid`` (stable order, and a resume starts with one ``OFFSET`` inside the
right table). Columns a table lacks read as NULL, so older or newer legacy schemas still map.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvs.errors import LegacyFormatError
from replay.model import BadValue, Record, reject

__all__ = ["CHUNK", "Ctx", "SqliteReader", "TableMap", "is_sqlite", "open_ro", "table_columns"]

CHUNK = 5000
_MAGIC = b"SQLite format 3\x00"


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(16) == _MAGIC
    except OSError:
        return False


def open_ro(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise LegacyFormatError(f"{path}: not a readable SQLite database: {exc}") from exc
    # Legacy text columns may hold bytes that are not UTF-8: read them (U+FFFD for the bad
    # bytes) rather than fail the whole table.
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    return conn


def table_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    ]
    return {n: [r[1] for r in conn.execute(f'PRAGMA table_info("{n}")')] for n in names}


@dataclass(frozen=True)
class Ctx:
    """What a row mapper needs to know about its source."""

    fmt: str
    path: Path
    table: str
    source: str
    mtime: float
    host: str = ""


@dataclass(frozen=True)
class TableMap:
    """How the rows of one legacy table become records.

    ``signature`` are columns that identify the table (two legacy databases use the same
    table name with different columns); ``columns`` are read (missing ones read as NULL).
    """

    table: str
    signature: tuple[str, ...]
    columns: tuple[str, ...]
    entity: str
    mapper: Callable[[Ctx, int, dict[str, Any]], Record]

    def matches(self, tables: dict[str, list[str]]) -> bool:
        cols = tables.get(self.table)
        return cols is not None and all(c in cols for c in self.signature)


class SqliteReader:
    """A legacy SQLite format: the table mappings it knows, read in a fixed order."""

    def __init__(
        self, fmt: str, name: str, maps: tuple[TableMap, ...], *, identifying: int = 0
    ) -> None:
        self.format = fmt
        self.name = name
        self.maps = maps
        # The first ``identifying`` maps recognise the format (all of them when 0).
        self._identifying = maps[:identifying] if identifying else maps

    def detect(self, path: Path) -> bool:
        if not is_sqlite(path):
            return False
        conn = open_ro(path)
        try:
            tables = table_columns(conn)
        finally:
            conn.close()
        return self.detect_tables(tables)

    def detect_tables(self, tables: dict[str, list[str]]) -> bool:
        return any(m.matches(tables) for m in self._identifying)

    def host_of(self, path: Path) -> str:
        return ""

    def count(self, path: Path) -> int:
        """How many records :meth:`read` yields (one per row of the mapped tables)."""
        conn = open_ro(path)
        try:
            tables = table_columns(conn)
            return sum(
                conn.execute(f'SELECT count(*) FROM "{tm.table}"').fetchone()[0]
                for tm in self.maps
                if tm.matches(tables)
            )
        finally:
            conn.close()

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        conn = open_ro(path)
        try:
            tables = table_columns(conn)
            mtime = path.stat().st_mtime
            for tm in self.maps:
                if not tm.matches(tables):
                    continue
                (count,) = conn.execute(f'SELECT count(*) FROM "{tm.table}"').fetchone()
                if skip >= count:
                    skip -= count
                    continue
                ctx = Ctx(
                    self.format, path, tm.table, f"legacy:{self.format}:{path.name}", mtime,
                    self.host_of(path),
                )
                yield from _rows(conn, tm, tables[tm.table], ctx, skip)
                skip = 0
        finally:
            conn.close()


def _rows(
    conn: sqlite3.Connection, tm: TableMap, have: list[str], ctx: Ctx, skip: int
) -> Iterator[Record]:
    present = [c for c in tm.columns if c in have]
    select = ", ".join(["rowid", *(f'"{c}"' for c in present)])
    missing = {c: None for c in tm.columns if c not in have}
    cur = conn.execute(
        f'SELECT {select} FROM "{tm.table}" ORDER BY rowid LIMIT ? OFFSET ?', (CHUNK, skip)
    )
    while True:
        rows = cur.fetchall()  # at most CHUNK rows: the page, never the table
        if not rows:
            return
        for r in rows:
            row = dict(zip(present, r[1:], strict=True))
            if missing:
                row.update(missing)
            yield _map(tm, ctx, r[0], row)
        last = rows[-1][0]
        cur = conn.execute(
            f'SELECT {select} FROM "{tm.table}" WHERE rowid > ? ORDER BY rowid LIMIT ?',
            (last, CHUNK),
        )


def _map(tm: TableMap, ctx: Ctx, rowid: int, row: dict[str, Any]) -> Record:
    location = f"{ctx.path.name}:{tm.table}:rowid={rowid}"
    try:
        return tm.mapper(ctx, rowid, row)
    except BadValue as exc:
        return reject(ctx.fmt, ctx.path, location, str(exc), row, entity=tm.entity)
    except (ValueError, TypeError, KeyError) as exc:
        # A mapper bug or a shape nobody foresaw: still a located rejection, never a crash.
        reason = f"unmappable row ({type(exc).__name__}: {exc})"
        return reject(ctx.fmt, ctx.path, location, reason, row, entity=tm.entity)
