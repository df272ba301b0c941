"""Background tasks stop when cancelled, even when a cancel is lost on the way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import pytest

from mvs.tasks import cancel_and_wait


async def _loses_cancels(lost: list[int], seen: list[int]) -> None:
    """A loop whose first ``lost[0]`` cancels vanish, as Python 3.11's ``wait_for`` drops a
    cancel that lands just as the awaited result arrives (CPython gh-86296)."""
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(1)
            if len(seen) > lost[0]:
                raise


def test_a_task_that_lets_cancels_pass_is_cancelled_until_it_ends() -> None:
    async def main() -> None:
        seen: list[int] = []
        task = asyncio.create_task(_loses_cancels([3], seen))
        await asyncio.sleep(0)
        assert await cancel_and_wait(task, timeout=5.0)
        assert task.cancelled() and len(seen) == 4

    asyncio.run(main())


def test_a_task_that_will_not_stop_is_named_and_left_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        seen: list[int] = []
        lost = [10**9]
        task = asyncio.create_task(_loses_cancels(lost, seen), name="stubborn-loop")
        await asyncio.sleep(0)
        with caplog.at_level(logging.ERROR, logger="mvs.tasks"):
            assert not await cancel_and_wait(task, timeout=0.3)
        assert not task.done() and len(seen) >= 2
        assert any(getattr(r, "task", "") == "stubborn-loop" for r in caplog.records)
        lost[0] = 0  # it gives in: the next stop ends it
        assert await cancel_and_wait(task)

    asyncio.run(main())


def test_a_failed_or_finished_task_is_waited_for_without_complaint() -> None:
    async def boom() -> None:
        raise RuntimeError("kaput")

    async def main() -> None:
        failed = asyncio.create_task(boom())
        finished = asyncio.create_task(asyncio.sleep(0))
        await asyncio.sleep(0.01)
        assert await cancel_and_wait(failed) and await cancel_and_wait(finished)

    asyncio.run(main())


def test_a_loop_over_wait_for_outlives_one_cancel_and_still_stops() -> None:
    """The race itself, made certain: the item arrives and the cancel lands in the same turn
    of the loop. Python 3.11's ``wait_for`` hands the item back and the cancel is gone; the
    helper cancels again. (3.12 fixed the race: there the first cancel is enough.)"""
    async def worker(q: asyncio.Queue[int]) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.get(), 0.001)

    async def main() -> None:
        for _ in range(10):
            q: asyncio.Queue[int] = asyncio.Queue()
            task = asyncio.create_task(worker(q))
            await asyncio.sleep(0)  # the worker waits in wait_for
            q.put_nowait(1)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.05)
            assert bool(done) == (sys.version_info >= (3, 12))
            assert await cancel_and_wait(task, timeout=5.0)
            assert task.cancelled()

    asyncio.run(main())
