"""Background tasks stop when cancelled, even when a cancel is lost on the way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Callable

import pytest

from mvs.tasks import cancel_and_wait, run


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


def _in_thread(target: Callable[[], object], guard: float = 60.0) -> list[object]:
    """Call ``target`` in a thread; [its result], or [] if it is still running after
    ``guard`` seconds (a hang guard: the thread is a daemon and is left behind)."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)
    thread.start()
    thread.join(guard)
    return out if not thread.is_alive() else []


def test_run_stops_a_leftover_task_that_takes_its_first_cancel_for_an_error() -> None:
    """asyncio.run's shutdown cancels each leftover once, then waits for ever: a consumer
    loop that took that cancel for a failed fetch (nats-py raises ConnectionClosedError for
    a cancel that lands in a fetch on a closed connection) kept a service process alive."""
    seen: list[int] = []

    async def main() -> str:
        asyncio.get_running_loop().create_task(_loses_cancels([1], seen), name="consumer")
        await asyncio.sleep(0)
        return "done"

    assert _in_thread(lambda: run(main())) == ["done"]
    assert len(seen) == 2  # its first cancel was lost, the second ended it


def test_run_returns_even_if_a_leftover_will_not_stop_and_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []

    async def main() -> None:
        asyncio.get_running_loop().create_task(_loses_cancels([10**9], seen), name="forever")
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="mvs.tasks"):
        assert _in_thread(lambda: run(main(), leftover_timeout=0.3)) == [None]
    assert any(getattr(r, "task", "") == "forever" for r in caplog.records)


def test_run_returns_the_result_and_raises_the_error_of_main() -> None:
    async def fails() -> None:
        raise RuntimeError("kaput")

    async def answers() -> int:
        return 42

    assert run(answers()) == 42
    with pytest.raises(RuntimeError, match="kaput"):
        run(fails())
