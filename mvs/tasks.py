"""Stopping background tasks for sure.

One ``task.cancel()`` is not enough on Python 3.11: ``asyncio.wait_for`` returns its inner
result when the cancel lands just as that result arrives, and the cancel is lost (CPython
gh-86296, fixed in 3.12). A loop that awaits ``wait_for`` (ours do; so does nats-py's
``next_msg``, under every pull ``fetch``) then goes on for ever, and ``cancel(); await task``
waits with it: a service's stop hung that way, once in a few hundred stops.

:func:`run` is ``asyncio.run`` for our processes: its shutdown cancels every leftover task once
and then waits for all of them without a bound. nats-py turns a cancel that reaches a
``next_msg`` (under every pull ``fetch``) on a closed connection into
``ConnectionClosedError``, so a consumer loop that retries on nats errors took that cancel
for a failed fetch and went on for ever: a service process that outlived its supervisor,
seen under load. :func:`run` stops the leftovers with :func:`cancel_and_wait` (cancelled again
until they end, each bounded) and closes the loop whatever is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from mvs.logs import get_logger

__all__ = ["cancel_and_wait", "run", "stop_leftover_tasks"]

T = TypeVar("T")

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


async def stop_leftover_tasks(*, timeout: float = 5.0) -> list[str]:
    """Stop every task of the running loop but the caller's; the names of those that would
    not stop within ``timeout`` (each is logged by :func:`cancel_and_wait`)."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    stopped = await asyncio.gather(*(cancel_and_wait(t, timeout=timeout) for t in tasks))
    return [t.get_name() for t, ok in zip(tasks, stopped, strict=True) if not ok]


def run(main: Coroutine[Any, Any, T], *, leftover_timeout: float = 5.0) -> T:
    """``asyncio.run(main)`` whose shutdown cannot hang on a task that lets a cancel pass:
    leftovers are stopped with :func:`stop_leftover_tasks`, and the loop is closed even if
    one would not stop (it is named in the log)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(stop_leftover_tasks(timeout=leftover_timeout))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
