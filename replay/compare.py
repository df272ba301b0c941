"""Comparing a legacy reply with the reply MVS gave to the same request (shadow replay).

Both replies are in the legacy shape (``{"status": ..., ...}``; MVS replies are translated by
the target). Three comparators:

* :class:`Exact` for deterministic actions (memory get, cache hit, ``list_agents``): the status
  class must match and every field the legacy reply had must be in the MVS reply with an equal
  value (floats within a relative 1e-9), recursively. Fields MVS adds are allowed; volatile
  fields (request ids, timestamps of the exchange, timings) and per-action ``ignore`` fields
  are skipped, and so is the human ``message`` text. An error matches an error: the two
  systems word their error texts differently.
* :class:`Tolerant` for model output (LLM answers, translations): same status class, the text
  fields non-empty on both sides, and optionally a minimum similarity of the texts
  (``difflib`` ratio, 0..1).
* :class:`StatusOnly` for actions without a stable answer: the status class must match.

A comparison returns the list of differences, each naming the field path; empty means a match.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "VOLATILE",
    "Comparator",
    "Exact",
    "StatusOnly",
    "Tolerant",
    "comparator_for",
    "status_class",
]

VOLATILE = frozenset({
    "request_id", "timestamp", "source_agent", "latency_ms", "processing_time",
    "processing_time_ms", "elapsed_ms", "duration_ms", "served_by", "instance_id", "call_id",
})
_OK = frozenset({"success", "ok", "healthy", "degraded"})


def status_class(reply: Mapping[str, Any]) -> str:
    """``ok`` or ``error``: the legacy agents spelled success several ways."""
    status = str(reply.get("status", "ok")).lower()
    return "ok" if status in _OK else "error"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Comparator(Protocol):
    @property
    def kind(self) -> str: ...

    def compare(self, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]: ...


def _status_diff(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    want, got = status_class(expected), status_class(actual)
    if want == got:
        return []
    detail = actual.get("error") or actual.get("message") or ""
    return [f"status: expected {want}, got {got}" + (f" ({_short(detail)})" if detail else "")]


@dataclass(frozen=True)
class Exact:
    ignore: frozenset[str] = field(default_factory=frozenset)
    rel_tol: float = 1e-9
    kind: str = "exact"

    def compare(self, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
        diffs = _status_diff(expected, actual)
        if diffs or status_class(expected) == "error":
            # Two systems word their errors differently: an error matches an error.
            return diffs
        skip = VOLATILE | self.ignore | {"status", "message"}
        out: list[str] = []
        for key, want in expected.items():
            if key in skip:
                continue
            if key not in actual:
                out.append(f"{key}: missing (expected {_short(want)})")
                continue
            self._walk(key, want, actual[key], out)
        return out

    def _walk(self, path: str, want: Any, got: Any, out: list[str]) -> None:
        if isinstance(want, Mapping) and isinstance(got, Mapping):
            for key, value in want.items():
                if key in VOLATILE or key in self.ignore:
                    continue
                if key not in got:
                    out.append(f"{path}.{key}: missing (expected {_short(value)})")
                else:
                    self._walk(f"{path}.{key}", value, got[key], out)
            return
        if isinstance(want, list) and isinstance(got, list):
            if len(want) != len(got):
                out.append(f"{path}: expected {len(want)} items, got {len(got)}")
                return
            for i, (w, g) in enumerate(zip(want, got, strict=True)):
                self._walk(f"{path}[{i}]", w, g, out)
            return
        if _is_number(want) and _is_number(got):
            if not math.isclose(float(want), float(got), rel_tol=self.rel_tol, abs_tol=1e-12):
                out.append(f"{path}: expected {want!r}, got {got!r}")
            return
        if want != got:
            out.append(f"{path}: expected {_short(want)}, got {_short(got)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(reply: Mapping[str, Any], fields: Iterable[str]) -> str | None:
    for name in fields:
        value: Any = reply
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None:
            return value if isinstance(value, str) else repr(value)
    return None


@dataclass(frozen=True)
class Tolerant:
    text_fields: tuple[str, ...] = (
        "response", "text", "translation", "translated_text", "answer", "result", "output",
    )
    min_similarity: float | None = None
    kind: str = "tolerant"

    def compare(self, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
        diffs = _status_diff(expected, actual)
        if diffs or status_class(expected) == "error":
            return diffs
        want, got = _text(expected, self.text_fields), _text(actual, self.text_fields)
        if want is None:
            return []  # the legacy reply had no output text to hold MVS to
        if not got or not got.strip():
            return [f"output: empty, expected text like {_short(want)}"]
        if self.min_similarity is not None:
            ratio = difflib.SequenceMatcher(None, want, got).ratio()
            if ratio < self.min_similarity:
                return [f"output: similarity {ratio:.2f} < {self.min_similarity:.2f} "
                        f"(expected {_short(want)}, got {_short(got)})"]
        return []


@dataclass(frozen=True)
class StatusOnly:
    kind: str = "status"

    def compare(self, expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
        return _status_diff(expected, actual)


# Reads bump access counters and times in both systems; they are not the answer.
_MEMORY_READ_IGNORE = frozenset({"access_count", "last_accessed_at"})

_EXACT_ACTIONS: dict[str, frozenset[str]] = {
    "get_memory": _MEMORY_READ_IGNORE,
    "read": _MEMORY_READ_IGNORE,
    "get": _MEMORY_READ_IGNORE,
    "get_knowledge": _MEMORY_READ_IGNORE,
    "list_agents": frozenset({"last_seen_at", "last_heartbeat"}),
    "get_agent_endpoint": frozenset(),
    "discover": frozenset(),
    "get_emotional_state": frozenset(),
    "get_cached": frozenset(),
    "cache_get": frozenset(),
    "health_check": frozenset({"uptime", "uptime_s", "checks"}),
}
_TOLERANT_ACTIONS = frozenset({
    "text", "audio", "vision", "translate", "generate", "chat", "process", "query",
    "ask", "summarize", "complete", "transcribe",
})


def _cache_hit(reply: Mapping[str, Any] | None) -> bool:
    if not reply:
        return False
    return any(reply.get(k) is True for k in ("cached", "from_cache", "cache_hit")) or (
        reply.get("source") == "cache"
    )


def comparator_for(
    action: str,
    *,
    expected: Mapping[str, Any] | None = None,
    min_similarity: float | None = None,
    ignore: Iterable[str] = (),
) -> Comparator:
    """The comparator for a legacy action; unknown actions compare by status only.

    A reply the legacy side served from a cache (``cached``/``from_cache``/``cache_hit`` true,
    or ``source: cache``) is deterministic whatever the action: it is compared exactly.
    """
    extra = frozenset(ignore)
    if _cache_hit(expected):
        return Exact(ignore=_EXACT_ACTIONS.get(action, frozenset()) | extra)
    if action in _EXACT_ACTIONS:
        return Exact(ignore=_EXACT_ACTIONS[action] | extra)
    if action in _TOLERANT_ACTIONS:
        return Tolerant(min_similarity=min_similarity)
    return StatusOnly()
