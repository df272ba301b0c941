"""Child processes that end with the process that started them.

A test process killed by a timeout, or a supervisor killed with SIGKILL, runs no cleanup code:
its nats-server would go on holding the port and the store, and its service processes would
go on serving (two of each once MVS is started again, the old ``core`` holding the DuckDB
file). On Linux the child asks the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``), so it still stops cleanly: JetStream flushes, a runner stops its
services.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["die_with_parent_hook"]

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:  # loaded here, before any fork: the child only makes the call
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    assert _PRCTL is not None
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess``/``asyncio`` that makes the child get SIGTERM when
    its parent dies; None where the platform has no such signal.

    The signal follows the *thread* that started the child, so start it from one that lives
    as long as the child should: the main thread, or an event loop's thread (the CLI, the
    supervisor and the test fixtures do).
    """
    return _die_with_parent if _PRCTL is not None else None
