"""L9: legacy agent logs, mixed JSON lines and Python logging lines, with tracebacks.

A record starts at a JSON line (``{"timestamp", "level", "agent", "message"}``) or a logging
line (``YYYY-MM-DD HH:MM:SS,mmm - LEVEL - message``); following lines that start neither (a
traceback) belong to it and are appended to its message. The file is read line by line. A
line that looks like JSON but is not, or text before the first record, is rejected with its
line number.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from replay.model import BadValue, Record, event_id, reject, to_text, to_time
from streams.events.legacy import LegacyLogLine

__all__ = ["READER", "parse_logging_line"]

_LOGGING = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:[,.](\d{1,6}))?\s+-\s+"
    r"(?:(?P<name>[\w.\-]+)\s+-\s+)?(?P<level>[A-Z]+)\s+-\s+(?P<msg>.*)$"
)
_TEXT_SUFFIXES = (".log", ".txt", ".jsonl", ".out", ".err")


def parse_logging_line(line: str) -> tuple[float, str, str, str] | None:
    """``(epoch, level, logger_name, message)`` of a Python logging line, else ``None``."""
    m = _LOGGING.match(line)
    if not m:
        return None
    dt = datetime.strptime(m.group(1).replace("T", " "), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    frac = m.group(2) or "0"
    at = dt.timestamp() + int(frac) / 10 ** len(frac)
    return at, m.group("level"), m.group("name") or "", m.group("msg")


class _Pending:
    def __init__(self, line_no: int, agent: str, level: str, message: str, at: float | None,
                 raw: str) -> None:
        self.line_no, self.agent, self.level, self.at = line_no, agent, level, at
        self.lines = [message]
        self.raw = [raw]


class AgentLogReader:
    format = "L9"
    name = "agent-log"

    def detect(self, path: Path) -> bool:
        if path.suffix.lower() not in _TEXT_SUFFIXES:
            return False
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                for _, line in zip(range(50), f, strict=False):
                    s = line.strip()
                    if parse_logging_line(s) or (s.startswith("{") and '"level"' in s):
                        return True
        except OSError:
            return False
        return False

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        index = -1
        for rec in self._records(path):
            index += 1
            if index >= skip:
                yield rec

    def _records(self, path: Path) -> Iterator[Record]:
        agent_default = path.stem
        pending: _Pending | None = None
        with path.open(encoding="utf-8", errors="replace") as f:
            for no, raw_line in enumerate(f, start=1):
                line = raw_line.rstrip("\r\n")
                start = self._start(path, no, line, agent_default)
                if start is None:
                    if pending is not None:
                        pending.lines.append(line)
                        pending.raw.append(line)
                    elif line.strip():
                        yield reject("L9", path, f"{path.name}:line {no}",
                                     "text before the first log record", line)
                    continue
                if pending is not None:
                    yield _finish(path, pending)
                    pending = None
                if isinstance(start, Record):
                    yield start
                else:
                    pending = start
        if pending is not None:
            yield _finish(path, pending)

    @staticmethod
    def _start(path: Path, no: int, line: str, agent: str) -> _Pending | Record | None:
        s = line.strip()
        if s.startswith("{"):
            try:
                obj = json.loads(s)
                if not isinstance(obj, dict):
                    raise BadValue("JSON line is not an object")
                at = to_time(obj.get("timestamp"), "timestamp")
            except (ValueError, BadValue) as exc:
                reason = str(exc) if isinstance(exc, BadValue) else f"invalid JSON line: {exc}"
                return reject("L9", path, f"{path.name}:line {no}", reason, line)
            return _Pending(no, to_text(obj.get("agent")) or agent,
                            to_text(obj.get("level"), "INFO").upper(),
                            to_text(obj.get("message")), at, line)
        parsed = parse_logging_line(s)
        if parsed is None:
            return None
        at, level, _name, msg = parsed
        return _Pending(no, agent, level, msg, at, line)


def _finish(path: Path, p: _Pending) -> Record:
    message = "\n".join(p.lines)
    ev = LegacyLogLine(
        event_id=event_id("L9", "line", (path.name, p.line_no), "\n".join(p.raw)),
        occurred_at=p.at if p.at is not None else path.stat().st_mtime,
        source=f"legacy:L9:{path.name}",
        agent=p.agent,
        level=p.level,
        message=message,
        at=p.at,
        source_file=path.name,
        line_no=p.line_no,
    )
    return Record(events=(ev,), entity="legacy_log", at=p.at)


READER = AgentLogReader()
