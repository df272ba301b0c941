"""Structured logs: one JSON object per line on stderr.

Every record carries ``ts``, ``level``, ``logger``, ``msg`` and whatever the caller passed in
``extra`` (``service``, ``action``, ``call_id``...), so logs can be filtered with ``jq`` and
shipped as they are. Library code only calls :func:`get_logger`; the process entry point
(``mvs up``, the service runner) calls :func:`configure_logging` once.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import msgspec

__all__ = ["JsonFormatter", "configure_logging", "get_logger"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line; values that are not JSON become their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return _encoder.encode(out).decode()
        except (TypeError, msgspec.EncodeError):
            return _encoder.encode({k: str(v) for k, v in out.items()}).decode()


def configure_logging(level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Send all ``mvs`` logs as JSON lines to ``stream`` (default stderr); idempotent."""
    root = logging.getLogger("mvs")
    for handler in list(root.handlers):
        if getattr(handler, "_mvs_json", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._mvs_json = True  # type: ignore[attr-defined]  # marks our handler for idempotency
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    logging.Formatter.converter = time.gmtime


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``mvs`` tree (``mvs.<name>``)."""
    return logging.getLogger(name if name.startswith("mvs") else f"mvs.{name}")
