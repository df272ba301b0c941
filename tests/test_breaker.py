"""The circuit breaker with the plan's settings, on an injected clock."""

from __future__ import annotations

import asyncio

import pytest
from logread import stored_events

from mvs.breaker import CircuitBreaker
from mvs.errors import CircuitOpen
from streams.events.system import BreakerStateChanged


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, changes: list[BreakerStateChanged]) -> CircuitBreaker:
    return CircuitBreaker(
        service="RequestCoordinator",
        dependency="cloud_api",
        failure_threshold=5,
        timeout_s=30.0,
        half_open_requests=3,
        clock=clock,
        on_change=changes.append,
    )


async def _fail() -> None:
    raise ConnectionError("down")


async def _ok() -> str:
    return "fine"


def test_breaker_opens_after_five_failures_half_opens_after_timeout_closes_after_three_probes(
) -> None:
    async def main() -> None:
        clock, changes = Clock(), []
        b = _breaker(clock, changes)
        for _ in range(4):
            with pytest.raises(ConnectionError):
                await b.call(_fail)
        assert b.state == "closed"
        with pytest.raises(ConnectionError):
            await b.call(_fail)
        assert b.state == "open"
        with pytest.raises(CircuitOpen, match="cloud_api is open"):
            await b.call(_ok)
        clock.now += 29.9
        assert b.state == "open"
        clock.now += 0.1
        assert b.state == "half_open"
        assert await b.call(_ok) == "fine"
        assert await b.call(_ok) == "fine"
        assert b.state == "half_open"
        assert await b.call(_ok) == "fine"
        assert b.state == "closed"
        assert [(c.from_state, c.to_state) for c in changes] == [
            ("closed", "open"), ("open", "half_open"), ("half_open", "closed")
        ]
        assert changes[0].failures == 5 and changes[0].dependency == "cloud_api"

    asyncio.run(main())


def test_a_failed_probe_reopens_for_another_timeout() -> None:
    async def main() -> None:
        clock, changes = Clock(), []
        b = _breaker(clock, changes)
        for _ in range(5):
            with pytest.raises(ConnectionError):
                await b.call(_fail)
        clock.now += 30
        await b.call(_ok)
        with pytest.raises(ConnectionError):
            await b.call(_fail)
        assert b.state == "open"
        clock.now += 29
        with pytest.raises(CircuitOpen):
            await b.call(_ok)
        clock.now += 1
        assert b.state == "half_open"
        assert [c.to_state for c in changes] == ["open", "half_open", "open", "half_open"]

    asyncio.run(main())


def test_half_open_admits_at_most_three_probes_at_once() -> None:
    clock, changes = Clock(), []
    b = _breaker(clock, changes)
    for _ in range(5):
        b.acquire()
        b.record(False)
    clock.now += 30
    for _ in range(3):
        b.acquire()
    with pytest.raises(CircuitOpen, match="probes in flight"):
        b.acquire()
    for _ in range(3):
        b.record(True)
    assert b.state == "closed"
    b.acquire()


def test_success_resets_the_consecutive_failure_count() -> None:
    clock, changes = Clock(), []
    b = _breaker(clock, changes)
    for _ in range(20):
        for _ in range(4):
            b.acquire()
            b.record(False)
        b.acquire()
        b.record(True)
    assert b.state == "closed" and changes == []


def test_excluded_errors_do_not_count() -> None:
    async def bad_request() -> None:
        raise ValueError("caller's fault")

    async def main() -> None:
        b = CircuitBreaker(service="s", dependency="d", excluded=(ValueError,), clock=Clock())
        for _ in range(10):
            with pytest.raises(ValueError):
                await b.call(bad_request)
        assert b.state == "closed" and b.failures == 0

    asyncio.run(main())


def test_a_services_breaker_records_changes_as_events_and_degrades_health(nats_url: str) -> None:
    from mvs.rpc import Empty
    from mvs.service import Service, ServiceClient, ServiceContext, endpoint
    from streams.definitions import apply_streams

    class Caller(Service):
        name = "Caller"

        @endpoint("go", request=Empty, reply=Empty)
        async def go(self, req: Empty) -> Empty:
            await self.breaker("flaky_api").call(_fail)
            return Empty()

    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        svc = Caller(ctx)
        await svc.start()
        try:
            client = ServiceClient(ctx.nc)
            codes = []
            for _ in range(6):
                try:
                    await client.call("Caller", "go", Empty(), Empty)
                except Exception as exc:
                    codes.append(getattr(exc, "code", "?"))
            assert codes == ["500"] * 5 + ["503"]  # the sixth is refused by the open breaker
            health = await svc.health()
            assert health.status == "degraded" and health.breakers == {"flaky_api": "open"}
            await ctx.events.flush()
            event = (await stored_events(ctx.js, "mvs.evt.breaker.>"))[0]
            assert isinstance(event, BreakerStateChanged)
            assert (event.service, event.dependency, event.to_state, event.failures) == (
                "Caller", "flaky_api", "open", 5
            )
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())
