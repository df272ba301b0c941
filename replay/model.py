"""What a legacy reader yields: records, each mapped to MVS events or to one rejection.

Every reader turns its source into an ordered sequence of :class:`Record`; the position of a
record in that sequence is what replay tracking stores, so a reader must yield the same
records in the same order for the same bytes. Event ids are derived from the format, the
record's identity and a digest of its raw content: the same legacy record always gives the
same ``Nats-Msg-Id``, and a record that changed between two snapshots gives a new one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

from streams.base import Event
from streams.events.legacy import LegacyRecordRejected

__all__ = [
    "BadValue",
    "Reader",
    "Record",
    "digest",
    "event_id",
    "parse_json",
    "reject",
    "to_float",
    "to_int",
    "to_text",
    "to_time",
]


@dataclass(frozen=True, slots=True)
class Record:
    """One legacy record: the events it maps to, or a single rejection event.

    ``entity`` names the verification entity (``memories``, ``translations``...), ``at`` is
    the record's own time (for ``--since``/``--until``), ``None`` when the legacy row had none.
    """

    events: tuple[Event, ...]
    entity: str
    at: float | None = None
    rejected: bool = False
    findings: tuple[str, ...] = field(default=())


class Reader(Protocol):
    """A legacy format family: detection and streaming reading."""

    format: str  # "L1".."L10"
    name: str  # e.g. "memory-db"

    def detect(self, path: Path) -> bool: ...

    def read(self, path: Path, *, skip: int = 0) -> Iterator[Record]:
        """Yield records in a stable order, starting after the first ``skip`` of them."""
        ...


class BadValue(ValueError):
    """A legacy value that cannot be mapped; the message names the field."""


def digest(*parts: object) -> str:
    """BLAKE2b-128 of each part's ``repr``, each followed by 0x1f (event ids depend on it:
    the value must never change, or a second replay of the same data would duplicate it)."""
    text = "\x1f".join(map(repr, parts)) + "\x1f"  # one update: the same digest, fewer calls
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def event_id(fmt: str, kind: str, key: object, raw: object) -> str:
    """The deterministic event id of a replayed record (its ``Nats-Msg-Id``)."""
    return "lg-" + digest(fmt, kind, key, raw)


def reject(
    fmt: str, path: Path, location: str, reason: str, raw: object, entity: str = "rejections"
) -> Record:
    text = raw if isinstance(raw, str) else _safe_repr(raw)
    ev = LegacyRecordRejected(
        event_id=event_id(fmt, "rejected", location, text),
        occurred_at=_mtime(path),
        source=f"legacy:{fmt}:{path.name}",
        source_format=fmt,
        source_path=str(path),
        location=location,
        reason=reason,
        raw=text[:65536],
    )
    return Record(events=(ev,), entity=entity, rejected=True)


def _safe_repr(raw: object) -> str:
    try:
        return json.dumps(raw, ensure_ascii=False, default=_bytes_repr)
    except (TypeError, ValueError):
        return repr(raw)


def _bytes_repr(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def to_float(value: Any, name: str, default: float | None = None) -> float | None:
    """Numbers, numeric strings and bools become floats; NULL gives ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str | bytes):
        try:
            f = float(value)
        except ValueError:
            raise BadValue(f"{name}: {value!r} is not a number") from None
    else:
        raise BadValue(f"{name}: {type(value).__name__} is not a number")
    if math.isnan(f) or math.isinf(f):
        raise BadValue(f"{name}: {value!r} is not a finite number")
    return f


def to_int(value: Any, name: str, default: int = 0) -> int:
    f = to_float(value, name, None)
    if f is None:
        return default
    if not f.is_integer():
        raise BadValue(f"{name}: {value!r} is not a whole number")
    return int(f)


def to_time(value: Any, name: str) -> float | None:
    """Epoch seconds (number or numeric text) or an ISO 8601 text; NULL stays ``None``.

    ISO times without a zone are taken as UTC (the legacy hosts ran in UTC).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return to_float(value, name)
        except BadValue:
            pass
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadValue(f"{name}: {value!r} is neither epoch seconds nor an ISO time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    return to_float(value, name)


def to_text(value: Any, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


_json_decode = msgspec.json.Decoder().decode


def parse_json(value: Any) -> tuple[Any, bool]:
    """``(parsed, ok)``: NULL and empty text parse to ``None``; invalid JSON is ``ok=False``."""
    if value is None:
        return None, True
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return value, True
    try:
        return _json_decode(value), True
    except msgspec.DecodeError:
        if not value.strip():
            return None, True
        return None, False
