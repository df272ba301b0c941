"""One reader per legacy format family (FORMATS.md L1-L10), in detection order."""

from __future__ import annotations

from mvs.errors import LegacyFormatError
from replay.model import Reader
from replay.readers import (
    agent_logs,
    health_sweeps,
    learning_db,
    memory_db,
    metrics_db,
    observations,
    service_registry,
    sessions,
    startup_config,
    translation_cache,
)

__all__ = ["READERS", "reader_for_format"]

# Order matters where shapes overlap: the more specific JSON shapes come first.
READERS: tuple[Reader, ...] = (
    memory_db.READER,
    metrics_db.L3_READER,
    learning_db.L2_READER,
    sessions.READER,
    health_sweeps.READER,
    observations.READER,
    service_registry.READER,
    translation_cache.READER,
    agent_logs.READER,
    startup_config.READER,
)


def reader_for_format(name: str) -> Reader:
    """The reader for ``L5`` or ``translation-cache`` (case-insensitive)."""
    want = name.strip().lower()
    for r in READERS:
        if want in (r.format.lower(), r.name):
            return r
    known = ", ".join(f"{r.format} ({r.name})" for r in READERS)
    raise LegacyFormatError(f"unknown legacy format {name!r}; known: {known}")
