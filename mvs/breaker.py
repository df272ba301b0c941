"""A circuit breaker per downstream dependency, with the plan's settings.

States: ``closed`` (calls pass; ``failure_threshold`` consecutive failures open it), ``open``
(calls are refused with :class:`~mvs.errors.CircuitOpen` until ``timeout_s`` has passed),
``half_open`` (at most ``half_open_requests`` probe calls are let through; when that many
succeed the breaker closes, the first failure opens it again for another ``timeout_s``).
Every state change is a ``breaker.changed.v1`` event handed to ``on_change``.

Why not pybreaker or aiobreaker: pybreaker's async support goes through Tornado and it lets
probes through without bounding how many run at once; aiobreaker closes on the first good
probe. The plan's ``half_open_requests: 3`` needs both an admission limit and three
successes, so this is a small, fully tested breaker with an injectable clock.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mvs.errors import CircuitOpen
from mvs.metrics import BREAKER_STATE, BREAKER_TRANSITIONS
from streams.events.system import BreakerState, BreakerStateChanged

__all__ = ["CircuitBreaker"]

T = TypeVar("T")
_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class CircuitBreaker:
    """Guards calls to one dependency; use :meth:`call`, or :meth:`acquire` + :meth:`record`."""

    def __init__(
        self,
        *,
        service: str,
        dependency: str,
        failure_threshold: int = 5,
        timeout_s: float = 30.0,
        half_open_requests: int = 3,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerStateChanged], None] | None = None,
        excluded: tuple[type[BaseException], ...] = (),
    ) -> None:
        if failure_threshold < 1 or half_open_requests < 1 or timeout_s < 0:
            raise ValueError("breaker thresholds must be positive")
        self.service = service
        self.dependency = dependency
        self.failure_threshold = failure_threshold
        self.timeout_s = timeout_s
        self.half_open_requests = half_open_requests
        self.excluded = excluded
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probes_admitted = 0
        self._probe_successes = 0
        BREAKER_STATE.labels(service, dependency).set(0)

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose timeout passed reports ``half_open``."""
        if self._state == "open" and self._clock() - self._opened_at >= self.timeout_s:
            self._move("half_open", "timeout elapsed")
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def acquire(self) -> None:
        """Ask to make a call now; raises :class:`CircuitOpen` if the breaker refuses it."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and self._probes_admitted < self.half_open_requests:
            self._probes_admitted += 1
            return
        wait = max(0.0, self.timeout_s - (self._clock() - self._opened_at))
        detail = f"retry in {wait:.1f} s" if state == "open" else "probes in flight"
        raise CircuitOpen(
            f"circuit to {self.dependency} is {state} after {self._failures} failures ({detail})"
        )

    def record(self, ok: bool) -> None:
        """Report the outcome of a call admitted by :meth:`acquire`."""
        if ok:
            if self._state == "half_open":
                self._probe_successes += 1
                if self._probe_successes >= self.half_open_requests:
                    self._move("closed", f"{self._probe_successes} probes succeeded")
            else:
                self._failures = 0
            return
        self._failures += 1
        if self._state == "half_open":
            self._move("open", "probe failed")
        elif self._state == "closed" and self._failures >= self.failure_threshold:
            self._move("open", f"{self._failures} consecutive failures")

    async def call(self, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker; its exceptions count as failures.

        Exceptions listed in ``excluded`` (e.g. a caller's bad request) pass through without
        counting either way.
        """
        self.acquire()
        try:
            result = await fn(*args, **kwargs)
        except self.excluded:
            self._release_probe()
            raise
        except BaseException:
            self.record(False)
            raise
        self.record(True)
        return result

    def _release_probe(self) -> None:
        if self._state == "half_open" and self._probes_admitted > 0:
            self._probes_admitted -= 1

    def _move(self, to: BreakerState, reason: str) -> None:
        before = self._state
        self._state = to
        if to == "open":
            self._opened_at = self._clock()
        if to in ("half_open", "open"):
            self._probes_admitted = 0
            self._probe_successes = 0
        failures = self._failures
        if to == "closed":
            self._failures = 0
        BREAKER_TRANSITIONS.labels(self.service, self.dependency, to).inc()
        BREAKER_STATE.labels(self.service, self.dependency).set(_STATE_VALUE[to])
        if self._on_change is not None:
            self._on_change(
                BreakerStateChanged(
                    service=self.service,
                    dependency=self.dependency,
                    from_state=before,
                    to_state=to,
                    failures=failures,
                    reason=reason,
                    source=self.service,
                )
            )
