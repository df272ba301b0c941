"""Read-only SQL over the projections, whether or not the system runs.

DuckDB lets one process write a file. When a :class:`projections.host.ProjectionHost` owns
it, it advertises itself in ``projections-runtime.json`` beside the file and answers
``mvs.svc.query.sql`` with an Arrow IPC stream; otherwise the file is opened read-only here.
Either way only a single SELECT (or EXPLAIN) statement is accepted, and it runs in a
transaction that is rolled back, so the query path cannot change the projections.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa

from mvs import tasks
from mvs.errors import NatsUnavailable, ProjectionError

__all__ = [
    "ADVERT_NAME",
    "EXPORT_SUBJECT",
    "QUERY_SUBJECT",
    "REBUILD_SUBJECT",
    "STATUS_HEADER",
    "STATUS_SUBJECT",
    "advert_path",
    "check_readonly",
    "export",
    "export_parquet",
    "format_table",
    "from_ipc",
    "open_readonly",
    "query",
    "request",
    "run_readonly",
    "running_host",
    "to_ipc",
]

ADVERT_NAME = "projections-runtime.json"
QUERY_SUBJECT = "mvs.svc.query.sql"
EXPORT_SUBJECT = "mvs.svc.query.export"
STATUS_SUBJECT = "mvs.svc.projections.status"
REBUILD_SUBJECT = "mvs.svc.projections.rebuild"
STATUS_HEADER = "Mvs-Status"

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def advert_path(duckdb_path: Path) -> Path:
    return duckdb_path.parent / ADVERT_NAME


def running_host(duckdb_path: Path) -> str | None:
    """The NATS URL of the live host that owns ``duckdb_path``, if one runs."""
    try:
        info = json.loads(advert_path(duckdb_path).read_text())
        pid, url = int(info["pid"]), str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return url


def check_readonly(sql: str) -> None:
    """Refuse anything but one SELECT/EXPLAIN statement, naming what was given."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ProjectionError(str(exc)) from exc
    if len(statements) != 1:
        raise ProjectionError(f"give exactly one SQL statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in _ALLOWED:
        raise ProjectionError(
            f"the query path is read-only: only SELECT is allowed, got {kind.name}"
        )


def run_readonly(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run one SELECT in a rolled-back transaction; DuckDB errors become ProjectionError."""
    check_readonly(sql)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            return con.sql(sql).to_arrow_table()
        finally:
            con.execute("ROLLBACK")
    except duckdb.Error as exc:
        raise ProjectionError(str(exc)) from exc


def open_readonly(duckdb_path: Path) -> duckdb.DuckDBPyConnection:
    if not duckdb_path.exists():
        raise ProjectionError(
            f"no projections at {duckdb_path} yet: run `mvs projections run` (or the system)"
        )
    try:
        return duckdb.connect(str(duckdb_path), read_only=True)
    except duckdb.Error as exc:
        raise ProjectionError(
            f"cannot open {duckdb_path} read-only ({exc}); another process holds it "
            "without advertising a query service"
        ) from exc


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def export_parquet(con: duckdb.DuckDBPyConnection, out_dir: Path) -> list[str]:
    """Write every table and view of the projections to ``out_dir/<name>.parquet``."""
    out_dir = out_dir.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_name NOT LIKE '%\\_\\_rebuild' ESCAPE '\\' ORDER BY table_name"
        ).fetchall()
    ]
    written = []
    for name in names:
        target = out_dir / f"{name}.parquet"
        quoted = str(target).replace("'", "''")
        try:
            con.execute(f"COPY (SELECT * FROM {name}) TO '{quoted}' (FORMAT parquet)")
        except duckdb.Error as exc:
            raise ProjectionError(f"cannot export {name} to {target}: {exc}") from exc
        written.append(str(target))
    return written


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return msgspec.json.encode(value, enc_hook=str).decode()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def format_table(table: pa.Table, fmt: str) -> str:
    """Render a result as ``table`` (aligned text), ``csv`` or ``json`` (a list of objects)."""
    names = table.column_names
    rows = table.to_pylist()
    if fmt == "json":
        return msgspec.json.encode(rows, enc_hook=str).decode()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        for r in rows:
            writer.writerow([_cell(r[n]) for n in names])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise ProjectionError(f"unknown format {fmt!r}: use table, csv or json")
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n), *(len(c[i]) for c in cells)]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


class _NoHost(ProjectionError):
    """The advertised host is gone (a stale advert): the file can be read directly."""


async def request(url: str, subject: str, data: bytes, *, timeout: float = 60.0) -> bytes:
    """Ask the running host; its error answers become ProjectionError."""
    import nats.errors

    from mvs.bus import connect

    nc = await connect(url, name="mvs-query")
    try:
        try:
            msg = await nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise _NoHost(f"no projection host answers {subject} at {url}") from exc
        except nats.errors.TimeoutError as exc:
            raise ProjectionError(
                f"the projection host at {url} did not answer {subject}: {type(exc).__name__}"
            ) from exc
    finally:
        await nc.close()
    if (msg.headers or {}).get(STATUS_HEADER) != "ok":
        raise ProjectionError(msg.data.decode(errors="replace"))
    return bytes(msg.data)


def query(duckdb_path: Path, sql: str, *, timeout: float = 60.0) -> pa.Table:
    """Run a read-only query through the running host, or on the file when none runs."""

    url = running_host(duckdb_path)
    if url is not None:
        check_readonly(sql)
        try:
            data = tasks.run(request(url, QUERY_SUBJECT, sql.encode(), timeout=timeout))
            return from_ipc(data)
        except (_NoHost, NatsUnavailable):
            pass  # a stale advert (its pid reused, or the server gone): read the file
    con = open_readonly(duckdb_path)
    try:
        return run_readonly(con, sql)
    finally:
        con.close()


def export(duckdb_path: Path, out_dir: Path, *, timeout: float = 600.0) -> list[str]:
    """Export every table to Parquet, through the running host when one runs."""

    url = running_host(duckdb_path)
    if url is not None:
        data = tasks.run(
            request(url, EXPORT_SUBJECT, str(out_dir.absolute()).encode(), timeout=timeout)
        )
        return list(json.loads(data))
    con = open_readonly(duckdb_path)
    try:
        return export_parquet(con, out_dir)
    finally:
        con.close()
