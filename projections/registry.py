"""The projections MVS runs, by name."""

from __future__ import annotations

from projections.base import Projection
from projections.history import HistoryProjection
from projections.learning import LearningProjection
from projections.legacy import LegacyProjection
from projections.memory import MemoryProjection
from projections.requests import RequestsProjection
from projections.twin import TwinProjection

__all__ = ["PROJECTIONS", "projection"]

PROJECTIONS: dict[str, type[Projection]] = {
    p.name: p
    for p in (
        HistoryProjection,
        MemoryProjection,
        TwinProjection,
        RequestsProjection,
        LearningProjection,
        LegacyProjection,
    )
}


def projection(name: str, suffix: str = "") -> Projection:
    from mvs.errors import ProjectionError

    try:
        return PROJECTIONS[name](suffix)
    except KeyError:
        known = ", ".join(PROJECTIONS)
        raise ProjectionError(f"no projection named {name!r} (known: {known})") from None
