"""Projections against a real nats-server and real DuckDB files.

The law: for any event sequence, each projection equals a plain-Python reference fold written
here, whatever the batch boundaries, restarts, redeliveries and duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mvs.bus import connect, jetstream
from projections.base import Item, Prepared, items_by_seq
from projections.history import history_row
from projections.intake import prepare_shares
from projections.memory import MemoryProjection
from projections.registry import projection
from projections.runner import Columns, ProjectionRunner
from streams.base import Event
from streams.catalog import encode_event, subject_of
from streams.definitions import EVENTS_STREAM, apply_streams
from streams.events import memory as m
from streams.events import models as md
from streams.events import requests as rq

HYP = settings(
    max_examples=int(os.environ.get("MVS_HYPOTHESIS_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

POISON = b"\x81\xa4junk"

# ---------------------------------------------------------------- strategies

ids = st.sampled_from(["m0", "m1", "m2"])
sessions = st.sampled_from([None, "s0", "s1"])
unit = st.floats(0, 1)
small_text = st.text(max_size=4)
meta = st.dictionaries(st.sampled_from(["topic", "x"]), small_text, max_size=2)
tags = st.lists(small_text, max_size=2)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(UNSET) | strategy


memory_events = st.one_of(
    st.builds(
        m.MemoryWritten, memory_id=ids, content=small_text,
        memory_type=st.sampled_from(["general", "knowledge_fact"]), importance=unit,
        access_count=st.integers(0, 3), metadata=meta, tags=tags, session_id=sessions,
        created_at=st.none() | st.floats(0, 2e9), metadata_raw=st.none() | small_text,
    ),
    st.builds(
        m.MemoryUpdated, memory_id=ids, content=maybe(small_text), importance=maybe(unit),
        tier=maybe(st.sampled_from(["short", "long"])), expires_at=maybe(st.none() | unit),
        metadata=maybe(meta), tags=maybe(tags), parent_id=maybe(st.none() | ids),
    ),
    st.builds(m.MemoryDeleted, memory_id=ids),
    st.builds(m.MemoryAccessed, memory_id=ids),
    st.builds(m.MemoryReinforced, memory_id=ids, importance=unit, tier=st.none() | st.just("long")),
    st.builds(m.MemoryDecayed, memory_id=ids, importance=unit, tier=st.just("short")),
    st.builds(
        m.MemoryEmbedded, memory_id=ids, model=st.just("e"),
        vector=st.lists(st.integers(-4, 4).map(float), min_size=1, max_size=3),
    ),
    st.builds(
        m.RelationshipAdded, source_memory_id=ids, target_memory_id=ids,
        relationship_type=st.sampled_from(["related", "child"]), strength=unit,
    ),
    st.builds(
        m.RelationshipRemoved, source_memory_id=ids, target_memory_id=ids,
        relationship_type=st.sampled_from(["related", "child"]),
    ),
    st.builds(m.ContextGroupCreated, group_id=st.sampled_from(["g0", "g1"]), name=small_text),
    st.builds(m.MemoryGrouped, group_id=st.sampled_from(["g0", "g1"]), memory_id=ids),
    st.builds(m.SessionStarted, session_id=st.sampled_from(["s0", "s1"]), summary=small_text),
)

req_ids = st.sampled_from(["r0", "r1"])
model_ids = st.sampled_from(["llm", "stt"])
twin_events = st.one_of(
    st.builds(rq.RequestReceived, request_id=req_ids, priority=st.integers(0, 9)),
    st.builds(
        rq.RequestRouted, request_id=req_ids, task_type=st.just("chat"),
        route=st.sampled_from(["local_model", "cloud_api"]),
    ),
    st.builds(rq.RequestStageCompleted, request_id=req_ids, stage=st.just("llm"),
              duration_ms=st.floats(0, 100)),
    st.builds(rq.RequestCompleted, request_id=req_ids, outcome=st.sampled_from(["ok", "error"]),
              latency_ms=st.floats(0, 100)),
    st.builds(md.ModelLoaded, model_id=model_ids, kind=st.just("llm"), backend=st.just("cpu"),
              memory_mb=st.floats(0, 1000)),
    st.builds(md.ModelUnloaded, model_id=model_ids, reason=st.just("idle")),
    st.builds(md.ModelEvicted, model_id=model_ids, to_make_room_for=st.just("x")),
)


def with_duplicates(events: st.SearchStrategy[Event]) -> st.SearchStrategy[list[Any]]:
    """A publish plan: events, re-publications of earlier ones (new seq), poison messages."""

    @st.composite
    def plan(draw: st.DrawFn) -> list[Any]:
        out: list[Any] = []
        for ev in draw(st.lists(events, min_size=1, max_size=25)):
            out.append(ev)
            if draw(st.integers(0, 9)) == 0:
                out.append(POISON)
            if draw(st.integers(0, 5)) == 0:
                out.append(draw(st.sampled_from([e for e in out if isinstance(e, Event)])))
        return out

    return plan()


# ---------------------------------------------------------------- reference folds


def ref_memory(plan: list[Any]) -> dict[str, Any]:
    seen: set[str] = set()
    mem: dict[str, dict[str, Any]] = {}
    rel: dict[tuple[str, str, str], float] = {}
    groups: dict[str, str] = {}
    members: set[tuple[str, str]] = set()
    sess: set[str] = set()
    emb: dict[str, list[float]] = {}
    refused: list[int] = []
    for seq, ev in enumerate(plan, start=1):
        if not isinstance(ev, Event):
            refused.append(seq)
            continue
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        if isinstance(ev, m.MemoryWritten):
            mem[ev.memory_id] = {
                "content": ev.content, "memory_type": ev.memory_type, "tier": ev.tier,
                "importance": ev.importance, "access_count": ev.access_count,
                "created_at": ev.occurred_at if ev.created_at is None else ev.created_at,
                "expires_at": ev.expires_at, "metadata": ev.metadata,
                "metadata_raw": ev.metadata_raw, "tags": ev.tags, "parent_id": ev.parent_id,
                "session_id": ev.session_id, "deleted": False,
            }
        elif isinstance(ev, (m.MemoryUpdated, m.MemoryDeleted, m.MemoryAccessed,
                             m.MemoryReinforced, m.MemoryDecayed, m.MemoryEmbedded)):
            cur = mem.get(ev.memory_id)
            if cur is None or cur["deleted"]:
                refused.append(seq)
                continue
            if isinstance(ev, m.MemoryUpdated):
                for f in ("content", "memory_type", "tier", "importance", "expires_at",
                          "parent_id", "tags"):
                    if getattr(ev, f) is not UNSET:
                        cur[f] = getattr(ev, f)
                if ev.metadata is not UNSET:
                    cur["metadata"], cur["metadata_raw"] = ev.metadata, None
            elif isinstance(ev, m.MemoryDeleted):
                cur["deleted"] = True
            elif isinstance(ev, m.MemoryAccessed):
                cur["access_count"] += 1
            elif isinstance(ev, m.MemoryEmbedded):
                emb[ev.memory_id] = ev.vector
            else:
                cur["importance"] = ev.importance
                cur["tier"] = ev.tier or cur["tier"]
        elif isinstance(ev, m.RelationshipAdded):
            rel[(ev.source_memory_id, ev.target_memory_id, ev.relationship_type)] = ev.strength
        elif isinstance(ev, m.RelationshipRemoved):
            rel.pop((ev.source_memory_id, ev.target_memory_id, ev.relationship_type), None)
        elif isinstance(ev, m.ContextGroupCreated):
            groups[ev.group_id] = ev.name
        elif isinstance(ev, m.MemoryGrouped):
            members.add((ev.group_id, ev.memory_id))
        elif isinstance(ev, m.SessionStarted):
            sess.add(ev.session_id)
    counts = {
        s: sum(1 for r in mem.values() if r["session_id"] == s and not r["deleted"]) for s in sess
    }
    return {"memories": mem, "rel": rel, "groups": groups, "members": members,
            "sessions": counts, "emb": emb, "refused": refused}


def db_memory(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    cols = ("content", "memory_type", "tier", "importance", "access_count", "created_at",
            "expires_at", "metadata", "metadata_raw", "tags", "parent_id", "session_id",
            "deleted")
    mem = {}
    for row in con.execute(f"SELECT memory_id, {', '.join(cols)} FROM memories").fetchall():
        rec = dict(zip(cols, row[1:], strict=True))
        rec["metadata"], rec["tags"] = json.loads(rec["metadata"]), json.loads(rec["tags"])
        mem[row[0]] = rec
    q = con.execute
    return {
        "memories": mem,
        "rel": {tuple(r[:3]): r[3] for r in q(
            "SELECT source_memory_id, target_memory_id, relationship_type, strength "
            "FROM memory_relationships").fetchall()},
        "groups": dict(q("SELECT group_id, name FROM context_groups").fetchall()),
        "members": set(q("SELECT group_id, memory_id FROM context_group_members").fetchall()),
        "sessions": dict(q("SELECT session_id, memory_count FROM sessions").fetchall()),
        "emb": dict(q("SELECT memory_id, vector FROM memory_embeddings").fetchall()),
        "refused": [r[0] for r in q(
            "SELECT seq FROM dead_letters WHERE projection = 'memory' ORDER BY seq").fetchall()],
    }


def ref_twin(plan: list[Any]) -> dict[str, Any]:
    seen: set[str] = set()
    reqs: dict[str, dict[str, Any]] = {}
    stages: list[tuple[str, float]] = []
    models: dict[str, tuple[bool, float]] = {}
    for ev in plan:
        if not isinstance(ev, Event) or ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        if isinstance(ev, (md.ModelLoaded, md.ModelUnloaded, md.ModelEvicted)):
            _, mb = models.get(ev.model_id, (False, 0.0))
            models[ev.model_id] = (
                (True, ev.memory_mb) if isinstance(ev, md.ModelLoaded) else (False, mb)
            )
            continue
        r = reqs.setdefault(ev.request_id, {"priority": None, "route": None, "outcome": None,
                                            "latency_ms": None, "stages": 0})
        if isinstance(ev, rq.RequestReceived):
            r["priority"] = ev.priority
        elif isinstance(ev, rq.RequestRouted):
            r["route"] = ev.route
        elif isinstance(ev, rq.RequestStageCompleted):
            r["stages"] += 1
            stages.append((ev.request_id, ev.duration_ms))
        else:
            r["outcome"], r["latency_ms"] = ev.outcome, ev.latency_ms
            if ev.route != "none" or r["route"] is None:
                r["route"] = ev.route
    return {"requests": reqs, "stages": sorted(stages), "models": models}


def db_twin(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    q = con.execute
    return {
        "requests": {r[0]: dict(zip(("priority", "route", "outcome", "latency_ms", "stages"),
                                    r[1:], strict=True)) for r in q(
            "SELECT request_id, priority, route, outcome, latency_ms, stages FROM requests"
        ).fetchall()},
        "stages": sorted(q("SELECT request_id, duration_ms FROM request_stages").fetchall()),
        "models": {r[0]: (r[1], r[2]) for r in q(
            "SELECT model_id, loaded, memory_mb FROM models").fetchall()},
    }


# ---------------------------------------------------------------- harness


async def reset_stream(js: JetStreamContext) -> None:
    with contextlib.suppress(NotFoundError):  # the first example has nothing to delete
        await js.delete_stream(EVENTS_STREAM)
    await apply_streams(js)


async def publish(js: JetStreamContext, plan: list[Any]) -> None:
    for ev in plan:
        if isinstance(ev, Event):
            # no Nats-Msg-Id: a re-published event gets a new seq, as beyond the window
            await js.publish(subject_of(ev), encode_event(ev))
        else:
            await js.publish("mvs.evt.memory.poison", ev)


def through_intake(runner: ProjectionRunner) -> None:
    """Have ``runner`` fold every batch as laid out by the intake process would lay it out
    (``prepare_shares``: prepared for history and requests, unprepared with a poison in it)."""
    plain = runner.apply

    def apply(msgs: list[Any], prepared: Any = None) -> None:
        batch = Columns([m.seq for m in msgs], [m.subject for m in msgs], [m.data for m in msgs])
        shares = prepare_shares(batch, {runner.name: None}, {runner.name: runner.projection})
        plain(msgs, shares.get(runner.name))

    runner.apply = apply  # type: ignore[method-assign]


async def fold(
    url: str, db_path: Path, names: tuple[str, ...], plan: list[Any], cut: int, batch: int,
    prepared: bool = False,
) -> None:
    """Publish ``plan[:cut]``, fold, stop everything, restart, publish the rest, fold
    (``prepared``: each batch laid out first, as by the intake process)."""
    nc = await connect(url)
    js = jetstream(nc)
    await reset_stream(js)
    for part in (plan[:cut], plan[cut:]):
        await publish(js, part)
        db = duckdb.connect(str(db_path))
        for name in names:
            runner = ProjectionRunner(projection(name), db, js, batch=batch)
            runner.prepare()
            if prepared:
                through_intake(runner)
            await runner.subscribe()
            # a redelivery of a committed batch: the consumer reads it again
            msgs = await runner.fetch(0.3)
            if msgs:
                runner.apply(msgs)
                await runner.subscribe(start_seq=msgs[0].seq)
            await runner.drain(timeout=0.2)
            await runner.close()
        db.close()
    await nc.close()


_HISTORY_COLUMNS = (
    "type", "event_id", "occurred_at", "source", "correlation_id", "domain", "key", "payload",
)


def ref_history(plan: list[Any]) -> list[tuple[Any, ...]]:
    """Every event published, duplicates included, as the row definition of ``history``."""
    rows = [history_row(Item(0, "", e, b"")) for e in plan if isinstance(e, Event)]
    return [tuple(r[c] for c in _HISTORY_COLUMNS) for r in rows]


def db_history(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    cols = ", ".join(_HISTORY_COLUMNS)
    return [tuple(r) for r in con.execute(f"SELECT {cols} FROM events ORDER BY seq").fetchall()]


def read(db_path: Path, fn: Any) -> Any:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return fn(con)
    finally:
        con.close()


# ---------------------------------------------------------------- properties


@HYP
@given(plan=with_duplicates(memory_events), data=st.data())
def test_memory_projection_equals_reference_fold_across_restarts_and_duplicates(
    nats_url: str, tmp_path: Path, plan: list[Any], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(plan)), label="restart at")
    batch = data.draw(st.sampled_from([1, 3, 100]), label="batch")
    prepared = data.draw(st.booleans(), label="laid out as by the intake process")
    db_path = tmp_path / f"p{abs(hash(str(plan)))}-{cut}-{batch}-{prepared}.duckdb"
    asyncio.run(fold(nats_url, db_path, ("memory", "history"), plan, cut, batch, prepared))
    assert read(db_path, db_memory) == ref_memory(plan)
    assert read(db_path, db_history) == ref_history(plan)


@HYP
@given(plan=with_duplicates(twin_events), data=st.data())
def test_requests_and_twin_projections_equal_reference_fold(
    nats_url: str, tmp_path: Path, plan: list[Any], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(plan)), label="restart at")
    batch = data.draw(st.sampled_from([1, 4, 100]), label="batch")
    prepared = data.draw(st.booleans(), label="laid out as by the intake process")
    db_path = tmp_path / f"t{abs(hash(str(plan)))}-{cut}-{batch}-{prepared}.duckdb"
    asyncio.run(fold(nats_url, db_path, ("requests", "twin"), plan, cut, batch, prepared))
    assert read(db_path, db_twin) == ref_twin(plan)


def test_poison_event_goes_to_dead_letters_and_later_events_apply(
    nats_url: str, tmp_path: Path
) -> None:
    plan = [m.MemoryWritten(memory_id="a", content="1"), POISON,
            m.MemoryUpdated(memory_id="a", content="2"), m.MemoryAccessed(memory_id="zz")]
    db_path = tmp_path / "p.duckdb"
    asyncio.run(fold(nats_url, db_path, ("memory",), plan, len(plan), 100))
    rows = read(db_path, lambda c: c.execute(
        "SELECT seq, subject, reason, raw FROM dead_letters ORDER BY seq").fetchall())
    assert rows[0][0] == 2 and rows[0][3] == POISON and "undecodable" in rows[0][2]
    assert rows[1][0] == 4 and "'zz' does not exist" in rows[1][2]
    content = read(db_path, lambda c: c.execute("SELECT content FROM memories").fetchall())
    assert content == [("2",)]



def test_an_event_published_again_after_a_restart_is_dropped_when_laid_out_by_the_intake(
    nats_url: str, tmp_path: Path
) -> None:
    """The intake hashes the event ids; the restarted runner's filter holds the hashes of
    the ids stored before: they must agree, or the copy would be folded a second time."""
    stage = rq.RequestStageCompleted(request_id="r1", stage="llm", duration_ms=1.0)
    plan = [rq.RequestReceived(request_id="r1", text="hi"), stage, stage]
    db_path = tmp_path / "r.duckdb"
    asyncio.run(fold(nats_url, db_path, ("requests",), plan, 2, 100, prepared=True))
    counts = read(db_path, lambda c: c.execute(
        "SELECT (SELECT count(*) FROM request_stages), (SELECT stages FROM requests), "
        "(SELECT count(*) FROM applied_requests)").fetchone())
    assert counts == (1, 1, 2)

# ---------------------------------------------------------------- set-based folds

maybe_text = st.none() | st.sampled_from(["a", "b"])
request_events = st.one_of(
    st.builds(
        rq.RequestReceived, request_id=req_ids, kind=st.sampled_from(["text", "audio"]),
        session_id=maybe_text, user_id=maybe_text, priority=st.integers(0, 9),
        task_type=maybe_text, occurred_at=st.floats(0, 10),
    ),
    st.builds(
        rq.RequestRouted, request_id=req_ids, task_type=st.sampled_from(["chat", "code"]),
        route=st.sampled_from(["local_model", "cloud_api"]), reason=st.sampled_from(["", "x"]),
        fallback_from=st.none() | st.just("cloud_api"), occurred_at=st.floats(0, 10),
    ),
    st.builds(rq.RequestStageCompleted, request_id=req_ids, stage=st.sampled_from(["a", "b"]),
              duration_ms=st.floats(0, 100), ok=st.booleans()),
    st.builds(
        rq.RequestCompleted, request_id=req_ids, outcome=st.sampled_from(["ok", "error"]),
        route=st.sampled_from(["none", "local_model", "cloud_api"]),
        latency_ms=st.floats(0, 100), error=maybe_text, occurred_at=st.floats(0, 10),
    ),
)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(request_events, min_size=1, max_size=30), data=st.data())
def test_set_based_requests_fold_equals_the_event_by_event_fold(
    events: list[Event], data: st.DataObject
) -> None:
    """Every column of ``requests`` and ``request_stages``, for any split into batches.

    Stored rows are found by index or (``by_join``) by a join, as for batches of many keys.
    """
    from unittest import mock

    from projections import base

    by_join = data.draw(st.booleans(), label="by_join")
    with mock.patch.object(base, "INDEX_LOOKUP_MAX", 0 if by_join else base.INDEX_LOOKUP_MAX):
        tables = _fold_requests_both_ways(events, data)
    assert tables[0] == tables[1]


def _fold_requests_both_ways(events: list[Event], data: st.DataObject) -> list[Any]:
    """Fold ``events`` in batches (cut anywhere) set-based and event by event. A batch of the
    set-based fold may be several shares laid out one by one and combined, as the feed
    combines a runner's held shares (a request then has a row in each)."""
    from projections.requests import GenericRequestsProjection, RequestsProjection

    items = [Item(i + 1, subject_of(e), e, b"") for i, e in enumerate(events)]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=4), label="cuts"))
    shares = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]
    batches: list[list[list[Item]]] = []
    for share in filter(None, shares):
        if batches and data.draw(st.booleans(), label="combined with the one before"):
            batches[-1].append(share)
        else:
            batches.append([share])
    tables = []
    for cls in (RequestsProjection, GenericRequestsProjection):
        con = duckdb.connect(":memory:")
        proj = cls()
        proj.create_schema(con)
        for batch in batches:
            con.execute("BEGIN TRANSACTION")
            if isinstance(proj, RequestsProjection):
                laid = [Prepared.make([], proj.prepare(share)) for share in batch]
                whole = [item for share in batch for item in share]
                proj.fold_prepared(con, Prepared.combine(laid).tables, items_by_seq(whole))
            else:
                proj.fold(con, [item for share in batch for item in share])
            con.execute("COMMIT")
        tables.append([
            sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("requests", "request_stages")
        ])
        con.close()
    return tables


class _EventByEventMemory(MemoryProjection):
    columnar_writes = False


# writes of more memories than the other events name, so that batches hold memories only
# written (the columnar path) beside memories also touched otherwise
many_writes = st.builds(
    m.MemoryWritten, memory_id=st.sampled_from([f"m{i}" for i in range(8)]), content=small_text,
    importance=unit, access_count=st.integers(0, 3), metadata=meta, tags=tags,
    session_id=sessions, created_at=st.none() | st.floats(0, 2e9),
)


# accesses, updates, reinforcements and decays of the memories many_writes writes: batches
# hold memories only patched (one UPDATE) beside memories also written or deleted
eight = st.sampled_from([f"m{i}" for i in range(8)])
patches = st.one_of(
    st.builds(m.MemoryAccessed, memory_id=eight, occurred_at=st.floats(0, 10)),
    st.builds(
        m.MemoryUpdated, memory_id=eight, content=maybe(small_text), importance=maybe(unit),
        memory_type=maybe(st.just("knowledge_fact")), tier=maybe(st.sampled_from(["short"])),
        expires_at=maybe(st.none() | unit), metadata=maybe(meta), tags=maybe(tags),
        parent_id=maybe(st.none() | eight), occurred_at=st.floats(0, 10),
    ),
    st.builds(m.MemoryReinforced, memory_id=eight, importance=unit,
              tier=st.none() | st.just("long")),
    st.builds(m.MemoryDecayed, memory_id=eight, importance=unit, tier=st.just("short")),
)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(many_writes | patches | memory_events, min_size=1, max_size=30),
    data=st.data(),
)
def test_columnar_memory_writes_equal_the_event_by_event_fold(
    events: list[Event], data: st.DataObject
) -> None:
    """Every column of every memory table, and the refusals, for any split into batches.

    Batches mix writes of memories nothing else touches (folded column by column) and
    patches of memories nothing else touches (one UPDATE) with everything else; later
    batches replace, patch and refuse stored, deleted and session-counted rows.
    """
    from unittest import mock

    from projections import base

    # most examples start from the eight memories stored (a batch of their writes), so that
    # the patches of later batches mostly apply rather than being refused
    seeded = data.draw(st.integers(0, 3), label="seeded") > 0
    if seeded:
        events = [
            m.MemoryWritten(memory_id=f"m{i}", content="seed", session_id=f"s{i % 2}")
            for i in range(8)
        ] + events
    items = [Item(i + 1, subject_of(e), e, b"") for i, e in enumerate(events)]
    first = 8 if seeded else 0
    cuts = sorted(
        data.draw(st.lists(st.integers(first, len(items)), max_size=3), label="cuts")
    )
    bounds = [0, first, *cuts] if seeded else [0, *cuts]
    parts = [items[a:b] for a, b in zip(bounds, [*bounds[1:], len(items)], strict=True)]
    by_join = data.draw(st.booleans(), label="by_join")
    # each batch also as shares laid out one by one (as the intake does) and combined
    shares = []
    for part in parts:
        inner = sorted(data.draw(st.lists(st.integers(0, len(part)), max_size=3), label="shares"))
        shares.append([
            part[a:b] for a, b in zip([0, *inner], [*inner, len(part)], strict=True) if b > a
        ])
    results = []
    with mock.patch.object(base, "INDEX_LOOKUP_MAX", 0 if by_join else base.INDEX_LOOKUP_MAX):
        for cls, combined in (
            (MemoryProjection, False), (MemoryProjection, True), (_EventByEventMemory, False)
        ):
            con = duckdb.connect(":memory:")
            proj = cls()
            proj.create_schema(con)
            refused = []
            for part, laid_out in zip(parts, shares, strict=True):
                if not part:
                    continue
                con.execute("BEGIN TRANSACTION")
                if combined:
                    laid = Prepared.combine(
                        [Prepared.make([], proj.prepare(share)) for share in laid_out]
                    )
                    done = proj.fold_prepared(con, laid.tables, items_by_seq(part))
                else:
                    done = proj.fold(con, part)
                refused += [(i.seq, why) for i, why in done]
                con.execute("COMMIT")
            tables = [
                sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in proj.tables
            ]
            results.append((sorted(refused), tables))
            con.close()
    assert results[0] == results[2]
    assert results[1] == results[2]


def test_memory_writes_are_laid_out_with_the_columns_of_the_memories_table() -> None:
    from projections.base import arrow_schema
    from projections.memory import _WRITTEN_SCHEMA

    con = duckdb.connect(":memory:")
    MemoryProjection().create_schema(con)
    assert arrow_schema(con, "memories") == _WRITTEN_SCHEMA


def test_items_by_seq_finds_each_item_and_refuses_a_seq_it_does_not_hold() -> None:
    events = [m.MemoryAccessed(memory_id=f"m{i}") for i in range(5)]
    items = [Item(10 * (i + 1), subject_of(e), e, b"") for i, e in enumerate(events)]
    at = items_by_seq(items)
    assert at([50, 10, 30]) == [items[4], items[0], items[2]]
    for missing in (5, 25, 60):
        with pytest.raises(ValueError, match=f"no event of seq {missing}"):
            at([missing])
