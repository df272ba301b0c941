"""Tracking records in DuckDB, beside the projections that they position.

eventsourcing's tracking recorder remembers, per upstream application, the last notification
id a downstream reader has processed. In MVS the readers are projections into DuckDB, so the
tracking table lives in a DuckDB file and a projection can write its rows and its position
in one DuckDB transaction (through :meth:`DuckDBTrackingRecorder.connection`).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import duckdb
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    ProgrammingError,
    Tracking,
    TrackingRecorder,
)

__all__ = ["DuckDBTrackingRecorder"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DuckDBTrackingRecorder(TrackingRecorder):
    """Tracking rows ``(application_name, notification_id)`` in a DuckDB table.

    ``path`` is a DuckDB file (its folder is created) or ``":memory:"``. A notification id
    may only be recorded above the current maximum for its application: recording it again,
    or filling a gap below the maximum, raises ``IntegrityError`` (the contract of
    eventsourcing's tracking recorders).
    """

    def __init__(self, path: str | Path, *, table: str = "tracking") -> None:
        if not _IDENT.fullmatch(table):
            raise ProgrammingError(f"tracking table name {table!r} is not a plain identifier")
        self.path = str(path)
        self.table = table
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = duckdb.connect(self.path)
        except duckdb.Error as exc:
            raise OperationalError(f"cannot open DuckDB tracking file {self.path}: {exc}") from exc
        # One connection shared by the threads of eventsourcing's runners; DuckDB
        # connections are not safe to use from two threads at once.
        self._lock = threading.Lock()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection, for projections that commit rows and tracking together."""
        return self._conn

    def create_table(self) -> None:
        with self._lock:
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "application_name VARCHAR NOT NULL, "
                "notification_id BIGINT NOT NULL, "
                "PRIMARY KEY (application_name, notification_id))"
            )

    def insert_tracking(self, tracking: Tracking) -> None:
        with self._lock:
            self._conn.begin()
            try:
                self.insert_tracking_locked(self._conn, tracking)
            except BaseException:
                self._conn.rollback()
                raise
            try:
                self._conn.commit()
            except duckdb.Error as exc:
                raise IntegrityError(f"tracking commit failed: {exc}") from exc

    def insert_tracking_locked(
        self, conn: duckdb.DuckDBPyConnection, tracking: Tracking
    ) -> None:
        """Insert inside the caller's transaction on ``conn`` (the caller holds the lock)."""
        try:
            row = conn.execute(
                f"SELECT max(notification_id) FROM {self.table} WHERE application_name = ?",
                [tracking.application_name],
            ).fetchone()
            current = row[0] if row else None
            if current is not None and current >= tracking.notification_id:
                raise IntegrityError(
                    f"notification {tracking.notification_id} of {tracking.application_name!r}"
                    f" is not after the tracked position {current}"
                )
            conn.execute(
                f"INSERT INTO {self.table} VALUES (?, ?)",
                [tracking.application_name, tracking.notification_id],
            )
        except duckdb.ConstraintException as exc:
            raise IntegrityError(str(exc)) from exc
        except duckdb.CatalogException as exc:
            raise ProgrammingError(f"tracking table missing: {exc}") from exc
        except duckdb.Error as exc:
            raise OperationalError(f"tracking insert failed: {exc}") from exc

    def max_tracking_id(self, application_name: str) -> int | None:
        with self._lock:
            try:
                row = self._conn.execute(
                    f"SELECT max(notification_id) FROM {self.table} WHERE application_name = ?",
                    [application_name],
                ).fetchone()
            except duckdb.CatalogException as exc:
                raise ProgrammingError(f"tracking table missing: {exc}") from exc
            except duckdb.Error as exc:
                raise OperationalError(f"tracking query failed: {exc}") from exc
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
