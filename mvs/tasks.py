"""Stopping background tasks for sure.

One ``task.cancel()`` is not enough on Python 3.11: ``asyncio.wait_for`` returns its inner
result when the cancel lands just as that result arrives, and the cancel is lost (CPython
gh-86296, fixed in 3.12). A loop that awaits ``wait_for`` (ours do; so does nats-py's
``next_msg``, under every pull ``fetch``) then goes on for ever, and ``cancel(); await task``
waits with it: a service's stop hung that way, once in a few hundred stops.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mvs.logs import get_logger

__all__ = ["cancel_and_wait"]

log = get_logger("mvs.tasks")

# how often a task that let a cancel pass is cancelled again
_RECANCEL_S = 0.05


async def cancel_and_wait(task: asyncio.Future[Any], *, timeout: float = 5.0) -> bool:
    """Cancel ``task`` until it has ended; True if it ended within ``timeout`` seconds.

    What the task raised is retrieved and dropped: a caller that stops a task has no use for
    its failure (a task worth watching logs its own). A task still running after ``timeout``
    is logged by name and left behind rather than holding up the stop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.error("task did not stop when cancelled", extra={"task": name,
                                                                  "timeout_s": timeout})
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(_RECANCEL_S, left))
    if not task.cancelled():
        task.exception()  # retrieved: asyncio does not report it as never retrieved
    return True
