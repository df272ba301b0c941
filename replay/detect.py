"""Which legacy format a source is: files are detected by content, folders are walked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvs.errors import LegacyFormatError
from replay.model import Reader
from replay.readers import READERS, reader_for_format

__all__ = ["Source", "detect", "discover"]


@dataclass(frozen=True)
class Source:
    path: Path
    reader: Reader | None  # None: no reader recognised the file

    @property
    def format(self) -> str:
        return self.reader.format if self.reader else "?"


def detect(path: Path) -> Reader | None:
    for reader in READERS:
        if reader.detect(path):
            return reader
    return None


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    return [path]


def discover(sources: list[Path], fmt: str | None = None) -> list[Source]:
    """Every file under ``sources`` with its reader (``fmt`` forces one for all of them)."""
    forced = reader_for_format(fmt) if fmt else None
    found: list[Source] = []
    for src in sources:
        if not src.exists():
            raise LegacyFormatError(f"{src}: no such file or folder")
        for path in _files(src):
            found.append(Source(path, forced or detect(path)))
    return found
