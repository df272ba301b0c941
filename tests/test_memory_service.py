"""MemoryOrchestratorService: writes are events, reads come back through the DuckDB projection."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from logread import stored_events

from mvs.bus import connect
from mvs.errors import ServiceCallError
from mvs.rpc import HealthReply, ServiceClient
from mvs.service import ServiceContext
from mvs.services.memory import MemoryOrchestratorService
from mvs.services.memory_api import (
    ContextGroupAdd,
    ContextGroupReply,
    FactAdd,
    FactQuery,
    GroupMember,
    MemoryAdd,
    MemoryId,
    MemoryList,
    MemoryRecord,
    MemoryRef,
    MemorySearch,
    MemoryUpdate,
    Reinforce,
    RelationshipAdd,
    RelationshipList,
    SessionQuery,
    SessionStart,
)
from mvs.services.memory_store import DAY, decay, lit
from mvs.services.model_manager import ModelManagerSuite
from projections.query import STATUS_SUBJECT
from streams.definitions import apply_streams
from streams.events.memory import MemoryDecayed, MemoryEmbedded, MemoryWritten

MEM = "MemoryOrchestratorService"


@pytest.mark.parametrize(
    ("importance", "tier", "days", "expected"),
    [
        (0.9, "short", 1.0, (0.8, "short")),
        (0.5, "short", 2.0, (0.3, "medium")),  # below 0.4: short -> medium
        (0.5, "medium", 2.0, (0.4, "medium")),
        (0.25, "medium", 1.0, (0.2, "medium")),
        (0.22, "medium", 1.0, (0.17, "long")),  # below 0.2: medium -> long
        (0.5, "long", 10.0, (0.4, "long")),
        (0.05, "short", 5.0, (0.0, "medium")),  # never below zero
    ],
)
def test_decay_follows_the_legacy_rates_and_tier_moves(
    importance: float, tier: str, days: float, expected: tuple[float, str]
) -> None:
    value, new_tier = decay(importance, tier, days * DAY)
    assert (round(value, 6), new_tier) == (pytest.approx(expected[0]), expected[1])


def test_sql_literals_cannot_break_out_of_a_string() -> None:
    assert lit("it's") == "'it''s'"
    assert lit("x'); DROP TABLE memories; --") == "'x''); DROP TABLE memories; --'"
    assert lit([0.5, 1]) == "[0.5, 1]" and lit(None) == "NULL"
    with pytest.raises(ValueError):
        lit(float("nan"))


@pytest.fixture
def projection_host(nats_url: str, tmp_path: Path) -> Iterator[str]:
    """``mvs projections run`` in its own process: the DuckDB owner, queried over NATS."""
    env = {**os.environ, "MVS_HOME": str(tmp_path / "home"), "MVS_NATS_URL": nats_url}
    log = (tmp_path / "projections.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mvs.cli", "projections", "run"], env=env, stdout=log, stderr=log
    )

    async def wait() -> None:
        nc = await connect(nats_url)
        try:
            for _ in range(300):
                try:
                    await nc.request(STATUS_SUBJECT, b"", timeout=0.2)
                    return
                except Exception:
                    await asyncio.sleep(0.1)
            raise RuntimeError(f"projection host did not start: {proc.poll()}")
        finally:
            await nc.close()

    try:
        asyncio.run(wait())
        yield nats_url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_memory_written_then_read_back_through_the_projection(projection_host: str) -> None:
    nats_url = projection_host

    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        models = ModelManagerSuite(ctx)
        await models.start()
        memory = MemoryOrchestratorService(ctx, decay_every_s=0)
        await memory.start()
        c = ServiceClient(ctx.nc, timeout=60)
        try:
            cat = await c.call(MEM, "add", MemoryAdd(content="The cat sleeps on the red sofa",
                                                     tags=["pets"], session_id="s1"), MemoryRef)
            tax = await c.call(MEM, "add", MemoryAdd(content="Income tax is due in April",
                                                     importance=0.9), MemoryRef)
            assert cat.memory_id.startswith("mem-") and tax.seq > cat.seq

            got = await c.call(MEM, "get", MemoryId(memory_id=cat.memory_id), MemoryRecord)
            assert got.content == "The cat sleeps on the red sofa" and got.tags == ["pets"]
            assert got.tier == "short" and got.session_id == "s1"

            found = await c.call(MEM, "search", MemorySearch(query="where does my kitten nap?",
                                                             limit=2), MemoryList)
            assert found.results[0].memory.memory_id == cat.memory_id
            assert found.results[0].score > found.results[1].score
            text = await c.call(MEM, "search", MemorySearch(query="APRIL", mode="text"), MemoryList)
            assert [h.memory.memory_id for h in text.results] == [tax.memory_id]

            await c.call(MEM, "update", MemoryUpdate(memory_id=cat.memory_id,
                                                     content="The cat sleeps on the blue sofa"),
                         MemoryRef)
            again = await c.call(MEM, "get", MemoryId(memory_id=cat.memory_id), MemoryRecord)
            assert "blue" in again.content and again.access_count >= 1

            stronger = await c.call(MEM, "reinforce", Reinforce(memory_id=cat.memory_id,
                                                                amount=0.2), MemoryRecord)
            assert stronger.importance == pytest.approx(0.7)

            await c.call(MEM, "relate", RelationshipAdd(source_memory_id=cat.memory_id,
                                                        target_memory_id=tax.memory_id),
                         MemoryRef)
            rels = await c.call(MEM, "relationships", MemoryId(memory_id=tax.memory_id),
                                RelationshipList)
            assert [(r.source_memory_id, r.relationship_type) for r in rels.relationships] == [
                (cat.memory_id, "related")
            ]

            group = await c.call(MEM, "group_create", ContextGroupAdd(name="home"),
                                 ContextGroupReply)
            await c.call(MEM, "group_add", GroupMember(group_id=group.group_id,
                                                       memory_id=cat.memory_id), MemoryRef)
            members = await c.call(MEM, "group_get", MemoryId(memory_id=group.group_id),
                                   ContextGroupReply)
            assert members.name == "home" and members.memory_ids == [cat.memory_id]

            await c.call(MEM, "session_start", SessionStart(session_id="s1", user_id="u1"),
                         MemoryRef)
            await c.call(MEM, "add", MemoryAdd(content="User: hi", memory_type="interaction",
                                               parent_id="s1", embed=False), MemoryRef)
            session = await c.call(MEM, "session_memories", SessionQuery(session_id="s1"),
                                   MemoryList)
            assert len(session.results) == 2

            await c.call(MEM, "fact_add", FactAdd(topic="geography",
                                                  content="Paris is the capital of France"),
                         MemoryRef)
            facts = await c.call(MEM, "facts", FactQuery(topic="geography"), MemoryList)
            assert [f.memory.content for f in facts.results] == ["Paris is the capital of France"]
            assert facts.results[0].memory.tier == "long"

            changed = await memory.sweep(time.time() + 3 * DAY)
            assert {m.memory_id for m in changed} >= {cat.memory_id, tax.memory_id}
            decayed = await c.call(MEM, "get", MemoryId(memory_id=cat.memory_id), MemoryRecord)
            assert decayed.tier == "medium" and decayed.importance == pytest.approx(0.4, abs=0.01)

            await c.call(MEM, "delete", MemoryId(memory_id=tax.memory_id), MemoryRef)
            with pytest.raises(ServiceCallError) as info:
                await c.call(MEM, "get", MemoryId(memory_id=tax.memory_id), MemoryRecord)
            assert info.value.code == "404"
            with pytest.raises(ServiceCallError) as info:
                await c.call(MEM, "add", MemoryAdd(content="x", importance=3.0), MemoryRef)
            assert info.value.code == "400" and "importance" in str(info.value)
            bad = await ctx.nc.request(f"mvs.svc.{MEM}.add", b'{"content": 42}', timeout=5)
            assert bad.headers and bad.headers["Nats-Service-Error-Code"] == "400"
            health = await c.call(MEM, "health", None, HealthReply)
            assert health.checks == {"projection": "ok"}
        finally:
            await memory.stop()
            await models.stop()
            await ctx.events.flush()
        kinds = [type(e) for e in await stored_events(ctx.js, "mvs.evt.memory.>")]
        assert kinds.count(MemoryWritten) == 4 and MemoryEmbedded in kinds
        assert MemoryDecayed in kinds
        await ctx.close()

    asyncio.run(main())
