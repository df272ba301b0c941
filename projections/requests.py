"""The ``requests`` projection: each request's lifecycle, route, stage latencies and outcome.

Events of one request may come from several services; any of them creates the row, and each
sets only its own columns, so the order of arrival does not lose information.
"""

from __future__ import annotations

from typing import Any, ClassVar

from projections.base import Append, FoldContext, Item, Key, Merge, Projection, Row
from streams.base import Event
from streams.events import requests as rq

__all__ = ["RequestsProjection"]

_EMPTY: Row = {
    "kind": None, "session_id": None, "user_id": None, "priority": None, "task_type": None,
    "route": None, "fallback_from": None, "route_reason": None, "outcome": None,
    "latency_ms": None, "received_at": None, "routed_at": None, "completed_at": None,
    "error": None, "stages": 0,
}


def _key(item: Item) -> Key:
    return (item.event.request_id,)  # type: ignore[attr-defined]


def _request(old: Row | None, item: Item, ctx: FoldContext) -> Row:
    ev: Any = item.event
    row = dict(old) if old is not None else {"request_id": ev.request_id, **_EMPTY}
    if isinstance(ev, rq.RequestReceived):
        row.update(
            kind=ev.kind, session_id=ev.session_id, user_id=ev.user_id, priority=ev.priority,
            received_at=ev.occurred_at,
        )
        if ev.task_type is not None:
            row["task_type"] = ev.task_type
    elif isinstance(ev, rq.RequestRouted):
        row.update(
            task_type=ev.task_type, route=ev.route, fallback_from=ev.fallback_from,
            route_reason=ev.reason, routed_at=ev.occurred_at,
        )
    elif isinstance(ev, rq.RequestStageCompleted):
        row["stages"] = (row["stages"] or 0) + 1
    else:
        row.update(
            outcome=ev.outcome, latency_ms=ev.latency_ms, completed_at=ev.occurred_at,
            error=ev.error,
        )
        if ev.route != "none" or row["route"] is None:
            row["route"] = ev.route
    return row


def _stage(item: Item) -> Row:
    ev: rq.RequestStageCompleted = item.event  # type: ignore[assignment]
    return {
        "request_id": ev.request_id, "stage": ev.stage, "duration_ms": ev.duration_ms,
        "ok": ev.ok, "detail": ev.detail, "occurred_at": ev.occurred_at, "seq": item.seq,
    }


_REQ = Merge("requests", _key, _request)


class RequestsProjection(Projection):
    name = "requests"
    subjects = ("mvs.evt.request.>",)
    schema_file = "requests.sql"
    tables = ("requests", "request_stages")
    keys: ClassVar[dict[str, tuple[str, ...]]] = {"requests": ("request_id",)}
    handlers: ClassVar[dict[type[Event], tuple[Append | Merge, ...]]] = {
        rq.RequestReceived: (_REQ,),
        rq.RequestRouted: (_REQ,),
        rq.RequestStageCompleted: (_REQ, Append("request_stages", _stage)),
        rq.RequestCompleted: (_REQ,),
    }
