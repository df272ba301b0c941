"""L4: the session store ``contextual_memory_store.json``.

Each session becomes a ``SessionStarted`` (with its legacy summary, as JSON text) followed by
one ``MemoryWritten`` of type ``interaction`` per entry, in file order. Entries out of time
order are kept in file order and reported as a finding; the memory id is derived from the
session, the entry's position and its content, so identical entries are both kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from replay.model import BadValue, Record, digest, event_id, reject, to_text, to_time
from replay.readers.jsonfile import load_json, peek_json
from streams.events.memory import MemoryWritten, SessionStarted

__all__ = ["READER"]


class SessionStoreReader:
    format = "L4"
    name = "session-store"

    def detect(self, path: Path) -> bool:
        data = peek_json(path)
        return isinstance(data, dict) and isinstance(data.get("sessions"), dict)

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        data = load_json(path)
        sessions = data.get("sessions") or {}
        summaries = data.get("summaries") or {}
        records = self._records(path, sessions, summaries if isinstance(summaries, dict) else {})
        for i, rec in enumerate(records):
            if i >= skip:
                yield rec

    def _records(
        self, path: Path, sessions: dict[str, Any], summaries: dict[str, Any]
    ) -> Iterator[Record]:
        source = f"legacy:L4:{path.name}"
        mtime = path.stat().st_mtime
        for sid, entries in sessions.items():
            where = f"{path.name}:sessions.{sid}"
            if not isinstance(entries, list):
                yield reject("L4", path, where, "session entries are not a list", entries)
                continue
            times = [_time_or_none(e) for e in entries]
            known = [t for t in times if t is not None]
            started = min(known) if known else None
            summary = summaries.get(sid)
            summary_text = (
                summary if isinstance(summary, str)
                else json.dumps(summary, ensure_ascii=False, sort_keys=True)
                if summary is not None else ""
            )
            findings = ("entries_out_of_order",) if known != sorted(known) else ()
            yield Record(
                events=(
                    SessionStarted(
                        event_id=event_id("L4", "session", sid, (started, summary_text)),
                        occurred_at=started if started is not None else mtime,
                        source=source,
                        session_id=sid,
                        started_at=started,
                        summary=summary_text,
                    ),
                ),
                entity="sessions",
                at=started,
                findings=findings,
            )
            for i, entry in enumerate(entries):
                try:
                    yield _entry(path, source, mtime, sid, i, entry)
                except BadValue as exc:
                    yield reject("L4", path, f"{where}[{i}]", str(exc), entry)


def _time_or_none(entry: Any) -> float | None:
    if not isinstance(entry, dict):
        return None
    try:
        return to_time(entry.get("timestamp"), "timestamp")
    except BadValue:
        return None


def _entry(path: Path, source: str, mtime: float, sid: str, i: int, entry: Any) -> Record:
    if not isinstance(entry, dict):
        raise BadValue(f"entry is a {type(entry).__name__}, not an object")
    if entry.get("content") is None:
        raise BadValue("content: missing")
    at = to_time(entry.get("timestamp"), "timestamp")
    kind = to_text(entry.get("type"), "unknown")
    extra = {k: v for k, v in entry.items() if k not in ("timestamp", "type", "content")}
    mid = "sess-" + digest(sid, i, entry.get("timestamp"), kind, entry.get("content"))
    ev = MemoryWritten(
        event_id=event_id("L4", "entry", mid, (sid, i)),
        occurred_at=at if at is not None else mtime,
        source=source,
        memory_id=mid,
        content=to_text(entry.get("content")),
        memory_type="interaction",
        created_at=at,
        metadata={"entry_type": kind, "legacy_position": i, **extra},
        session_id=sid,
    )
    return Record(events=(ev,), entity="memories", at=at)


READER = SessionStoreReader()
