"""Upcasters: old event versions turned into current ones on read.

An upcaster is a function from a decoded old-version Struct to the next version. Chains are
followed until a type with no upcaster is reached, so ``v1 -> v2 -> v3`` needs two functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from streams.base import Event
from streams.events.system import ServiceHealth, ServiceHealthV1

__all__ = ["UPCASTERS", "register", "upcast"]

E = TypeVar("E", bound=Event)

UPCASTERS: dict[type[Event], Callable[[Any], Event]] = {}


def register(old: type[E]) -> Callable[[Callable[[E], Event]], Callable[[E], Event]]:
    def wrap(fn: Callable[[E], Event]) -> Callable[[E], Event]:
        if old in UPCASTERS:
            raise ValueError(f"an upcaster for {old.__name__} is already registered")
        UPCASTERS[old] = fn
        return fn

    return wrap


def upcast(event: Event) -> Event:
    """The current version of ``event`` (the event itself when it is current)."""
    seen = 0
    while (fn := UPCASTERS.get(type(event))) is not None:
        event = fn(event)
        seen += 1
        if seen > 32:
            raise RuntimeError(f"upcaster chain does not end at {type(event).__name__}")
    return event


@register(ServiceHealthV1)
def _health_v1_to_v2(old: ServiceHealthV1) -> ServiceHealth:
    return ServiceHealth(
        event_id=old.event_id,
        occurred_at=old.occurred_at,
        source=old.source,
        correlation_id=old.correlation_id,
        service=old.service,
        status="healthy" if old.healthy else "unhealthy",
        detail=old.detail,
    )
