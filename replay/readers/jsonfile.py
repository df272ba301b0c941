"""Loading legacy JSON files (small enough for the stdlib) with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mvs.errors import LegacyFormatError

__all__ = ["load_json", "peek_json"]


def load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LegacyFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LegacyFormatError(f"{path}: invalid JSON: {exc}") from exc


def peek_json(path: Path) -> Any:
    """The parsed file when it is a ``.json`` file holding valid JSON, else ``None``."""
    if path.suffix.lower() != ".json":
        return None
    try:
        return load_json(path)
    except LegacyFormatError:
        return None
