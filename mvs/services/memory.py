"""MemoryOrchestratorService: one memory API over the event log and the memory projection.

It replaces the legacy MemoryOrchestratorService, SessionMemoryAgent, KnowledgeBase and
MemoryClient. Every write is a ``memory.*`` event, appended and acknowledged before the reply
(the reply carries the stream sequence); every read comes from the DuckDB projection, after
waiting until the projection has applied this service's latest write (see
:mod:`mvs.services.memory_store`). Memory state is never kept in the service.

Semantic search embeds texts with MiniLM through ModelManagerSuite (``embed``); each
memory's vector is a ``memory.embedded.v1`` event, so the projection's
``memory_embeddings`` can be rebuilt without the model. If the model service is away, a
memory is stored without a vector and search falls back to text matching.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TypeVar

from msgspec import UNSET, UnsetType

from mvs.errors import ProjectionError, ServiceCallError
from mvs.rpc import Empty, ServiceClient
from mvs.service import Service, ServiceContext, endpoint
from mvs.services.memory_api import (
    ContextGroupAdd,
    ContextGroupReply,
    FactAdd,
    FactQuery,
    GroupMember,
    MemoryAdd,
    MemoryHit,
    MemoryId,
    MemoryList,
    MemoryRecord,
    MemoryRef,
    MemorySearch,
    MemoryUpdate,
    Reinforce,
    RelationshipAdd,
    RelationshipList,
    RelationshipRecord,
    SessionQuery,
    SessionStart,
)
from mvs.services.memory_store import ProjectionReader, decay, lit, record_from_row
from mvs.services.model_manager import DEFAULT_EMBEDDING_MODEL, EmbedReply, EmbedRequest
from streams.base import Event
from streams.events import memory as ev

__all__ = ["MemoryOrchestratorService"]

_COLUMNS = (
    "memory_id, content, memory_type, tier, importance, access_count, created_at, "
    "last_accessed_at, expires_at, metadata, tags, parent_id, session_id, updated_at"
)


T = TypeVar("T")


def keep(value: T | None) -> T | UnsetType:
    """None in a request means "leave as is", which is UNSET in the event."""
    return UNSET if value is None else value


def _check_importance(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"importance must be between 0 and 1, got {value}")


class MemoryOrchestratorService(Service):
    """Memories, relationships, context groups, sessions and knowledge facts."""

    name = "MemoryOrchestratorService"

    def __init__(
        self, ctx: ServiceContext, *, heartbeat_s: float | None = None, decay_every_s: float = 3600
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        self.reader = ProjectionReader(ctx.nc, host=ctx.extras.get("projections"))
        self.models = ServiceClient(ctx.nc, timeout=30.0)
        self.embedding_model = DEFAULT_EMBEDDING_MODEL
        self.decay_every_s = decay_every_s
        self._last_seq = 0

    async def on_start(self) -> None:
        if self.decay_every_s > 0:
            self.spawn(self._decay_loop(), name="memory-decay")
        self.spawn(self._warm_up(), name="memory-warm-up")

    async def _warm_up(self, *, attempts: int = 60) -> None:
        """Have ModelManagerSuite load the embedding model now, not on a user's first search
        (loading torch and MiniLM takes seconds; the pipeline gives memory 2 s)."""
        for _ in range(attempts):
            try:
                await self.models.call(
                    "ModelManagerSuite", "embed",
                    EmbedRequest(texts=["warm up"], model_id=self.embedding_model), EmbedReply,
                )  # fmt: skip
                return
            except ServiceCallError:
                await asyncio.sleep(1.0)  # the model service may start after this one

    async def check_health(self) -> dict[str, str]:
        try:
            await self.reader.position()
        except ProjectionError as exc:
            return {"projection": str(exc)}
        return {"projection": "ok"}

    # ---- plumbing -------------------------------------------------------------------------
    async def _write(self, event: Event) -> int:
        ack = await self.ctx.events.publish(event)
        self._last_seq = max(self._last_seq, int(ack.seq))
        return int(ack.seq)

    async def _read(self, sql: str) -> list[dict[str, object]]:
        await self.reader.wait_for(self._last_seq)
        return await self.reader.rows(sql)

    async def _get(self, memory_id: str) -> MemoryRecord:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM memories WHERE memory_id = {lit(memory_id)} AND NOT deleted"
        )
        if not rows:
            raise LookupError(f"no memory {memory_id!r}")
        return record_from_row(rows[0])

    async def _embed(self, texts: list[str]) -> list[list[float]] | None:
        try:
            reply = await self.models.call(
                "ModelManagerSuite", "embed",
                EmbedRequest(texts=texts, model_id=self.embedding_model), EmbedReply,
            )  # fmt: skip
        except ServiceCallError as exc:
            self.log.warning("embedding unavailable", extra={"error": str(exc)})
            return None
        return reply.vectors

    # ---- memories -------------------------------------------------------------------------
    @endpoint("add", request=MemoryAdd, reply=MemoryRef, concurrency=8)
    async def add(self, req: MemoryAdd) -> MemoryRef:
        if not req.content.strip():
            raise ValueError("content must not be empty")
        _check_importance(req.importance)
        memory_id = req.memory_id or f"mem-{uuid.uuid4()}"
        seq = await self._write(ev.MemoryWritten(
            memory_id=memory_id, content=req.content, memory_type=req.memory_type, tier=req.tier,
            importance=req.importance, created_at=time.time(), expires_at=req.expires_at,
            metadata=req.metadata, tags=req.tags, parent_id=req.parent_id,
            session_id=req.session_id, source=self.name,
        ))  # fmt: skip
        if req.embed:
            vectors = await self._embed([req.content])
            if vectors:
                seq = await self._write(ev.MemoryEmbedded(
                    memory_id=memory_id, model=self.embedding_model, vector=vectors[0],
                    source=self.name,
                ))  # fmt: skip
        return MemoryRef(memory_id=memory_id, seq=seq)

    @endpoint("get", request=MemoryId, reply=MemoryRecord, concurrency=8)
    async def get(self, req: MemoryId) -> MemoryRecord:
        record = await self._get(req.memory_id)
        self.ctx.events.emit(ev.MemoryAccessed(memory_id=req.memory_id, source=self.name))
        return record

    @endpoint("update", request=MemoryUpdate, reply=MemoryRef)
    async def update(self, req: MemoryUpdate) -> MemoryRef:
        await self._get(req.memory_id)
        if req.importance is not None:
            _check_importance(req.importance)

        seq = await self._write(ev.MemoryUpdated(
            memory_id=req.memory_id, content=keep(req.content), memory_type=keep(req.memory_type),
            tier=keep(req.tier), importance=keep(req.importance), metadata=keep(req.metadata),
            tags=keep(req.tags), source=self.name,
        ))  # fmt: skip
        if req.content is not None:
            vectors = await self._embed([req.content])
            if vectors:
                seq = await self._write(ev.MemoryEmbedded(
                    memory_id=req.memory_id, model=self.embedding_model, vector=vectors[0],
                    source=self.name,
                ))  # fmt: skip
        return MemoryRef(memory_id=req.memory_id, seq=seq)

    @endpoint("delete", request=MemoryId, reply=MemoryRef)
    async def delete(self, req: MemoryId) -> MemoryRef:
        await self._get(req.memory_id)
        seq = await self._write(
            ev.MemoryDeleted(memory_id=req.memory_id, reason=req.reason, source=self.name)
        )
        return MemoryRef(memory_id=req.memory_id, seq=seq)

    @endpoint("reinforce", request=Reinforce, reply=MemoryRecord)
    async def reinforce(self, req: Reinforce) -> MemoryRecord:
        if not 0.0 < req.amount <= 1.0:
            raise ValueError(f"amount must be in (0, 1], got {req.amount}")
        current = await self._get(req.memory_id)
        importance = round(min(1.0, current.importance + req.amount), 6)
        await self._write(ev.MemoryReinforced(
            memory_id=req.memory_id, importance=importance, source=self.name
        ))  # fmt: skip
        return await self._get(req.memory_id)

    @endpoint("search", request=MemorySearch, reply=MemoryList, concurrency=8)
    async def search(self, req: MemorySearch) -> MemoryList:
        if not req.query.strip():
            raise ValueError("query must not be empty")
        if not 1 <= req.limit <= 100:
            raise ValueError(f"limit must be 1..100, got {req.limit}")
        started = time.perf_counter()
        where = ["NOT m.deleted"]
        if req.memory_type:
            where.append(f"m.memory_type = {lit(req.memory_type)}")
        if req.session_id:
            where.append(f"m.session_id = {lit(req.session_id)}")
        vectors = await self._embed([req.query]) if req.mode == "semantic" else None
        cols = ", ".join(f"m.{c.strip()}" for c in _COLUMNS.split(","))
        if vectors:
            dim = len(vectors[0])
            score = f"list_cosine_similarity(e.vector, {lit(vectors[0])}::FLOAT[{dim}])"
            sql = (
                f"SELECT {cols}, {score} AS score FROM memories m "
                f"JOIN memory_embeddings e USING (memory_id) WHERE {' AND '.join(where)} "
                f"AND {score} >= {lit(float(req.min_score))} ORDER BY score DESC LIMIT {req.limit}"
            )
        else:
            pattern = "%" + req.query.replace("\\", "\\\\").replace("%", "\\%") + "%"
            where.append(f"m.content ILIKE {lit(pattern)} ESCAPE '\\'")
            sql = (
                f"SELECT {cols}, m.importance AS score FROM memories m "
                f"WHERE {' AND '.join(where)} ORDER BY m.importance DESC LIMIT {req.limit}"
            )
        rows = await self._read(sql)
        hits = [MemoryHit(memory=record_from_row(r), score=float(r["score"] or 0)) for r in rows]  # type: ignore[arg-type]
        return MemoryList(results=hits, search_ms=round((time.perf_counter() - started) * 1e3, 3))

    # ---- relationships and groups -----------------------------------------------------------
    @endpoint("relate", request=RelationshipAdd, reply=MemoryRef)
    async def relate(self, req: RelationshipAdd) -> MemoryRef:
        await self._get(req.source_memory_id)
        await self._get(req.target_memory_id)
        seq = await self._write(ev.RelationshipAdded(
            source_memory_id=req.source_memory_id, target_memory_id=req.target_memory_id,
            relationship_type=req.relationship_type, strength=req.strength,
            created_at=time.time(), source=self.name,
        ))  # fmt: skip
        return MemoryRef(memory_id=req.source_memory_id, seq=seq)

    @endpoint("relationships", request=MemoryId, reply=RelationshipList)
    async def relationships(self, req: MemoryId) -> RelationshipList:
        key = lit(req.memory_id)
        rows = await self._read(
            "SELECT source_memory_id, target_memory_id, relationship_type, strength "
            f"FROM memory_relationships WHERE source_memory_id = {key} "
            f"OR target_memory_id = {key} ORDER BY created_at"
        )
        return RelationshipList(relationships=[
            RelationshipRecord(
                source_memory_id=str(r["source_memory_id"]),
                target_memory_id=str(r["target_memory_id"]),
                relationship_type=str(r["relationship_type"]),
                strength=float(r["strength"] or 0.0),  # type: ignore[arg-type]
            ) for r in rows
        ])  # fmt: skip

    @endpoint("group_create", request=ContextGroupAdd, reply=ContextGroupReply)
    async def group_create(self, req: ContextGroupAdd) -> ContextGroupReply:
        if not req.name.strip():
            raise ValueError("a context group needs a name")
        group_id = req.group_id or f"grp-{uuid.uuid4().hex[:12]}"
        seq = await self._write(ev.ContextGroupCreated(
            group_id=group_id, name=req.name, description=req.description,
            created_at=time.time(), source=self.name,
        ))  # fmt: skip
        return ContextGroupReply(group_id=group_id, name=req.name,
                                 description=req.description, seq=seq)

    @endpoint("group_add", request=GroupMember, reply=MemoryRef)
    async def group_add(self, req: GroupMember) -> MemoryRef:
        await self._group(req.group_id)
        await self._get(req.memory_id)
        seq = await self._write(ev.MemoryGrouped(
            group_id=req.group_id, memory_id=req.memory_id, created_at=time.time(),
            source=self.name,
        ))  # fmt: skip
        return MemoryRef(memory_id=req.memory_id, seq=seq)

    @endpoint("group_get", request=MemoryId, reply=ContextGroupReply)
    async def group_get(self, req: MemoryId) -> ContextGroupReply:
        """The group named by ``memory_id`` (the group id) and its members."""
        return await self._group(req.memory_id)

    async def _group(self, group_id: str) -> ContextGroupReply:
        key = lit(group_id)
        rows = await self._read(
            f"SELECT group_id, name, description FROM context_groups WHERE group_id = {key}"
        )
        if not rows:
            raise LookupError(f"no context group {group_id!r}")
        members = await self._read(
            f"SELECT memory_id FROM context_group_members WHERE group_id = {key} "
            "ORDER BY created_at, memory_id"
        )
        return ContextGroupReply(
            group_id=group_id, name=str(rows[0]["name"]),
            description=str(rows[0]["description"] or ""),
            memory_ids=[str(m["memory_id"]) for m in members],
        )  # fmt: skip

    # ---- sessions and knowledge facts ------------------------------------------------------
    @endpoint("session_start", request=SessionStart, reply=MemoryRef)
    async def session_start(self, req: SessionStart) -> MemoryRef:
        seq = await self._write(ev.SessionStarted(
            session_id=req.session_id, user_id=req.user_id, started_at=time.time(),
            summary=req.summary, source=self.name,
        ))  # fmt: skip
        return MemoryRef(memory_id=req.session_id, seq=seq)

    @endpoint("session_memories", request=SessionQuery, reply=MemoryList)
    async def session_memories(self, req: SessionQuery) -> MemoryList:
        """The session's memories in time order (legacy: interactions parented to it)."""
        key = lit(req.session_id)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM memories WHERE NOT deleted AND "
            f"(session_id = {key} OR parent_id = {key}) "
            f"ORDER BY created_at, memory_id LIMIT {max(1, min(req.limit, 1000))}"
        )
        return MemoryList(results=[MemoryHit(memory=record_from_row(r), score=1.0) for r in rows])

    @endpoint("fact_add", request=FactAdd, reply=MemoryRef)
    async def fact_add(self, req: FactAdd) -> MemoryRef:
        if not req.topic.strip():
            raise ValueError("a knowledge fact needs a topic")
        return await self.add(MemoryAdd(
            content=req.content, memory_type="knowledge_fact", tier="long",
            importance=req.importance, metadata={"topic": req.topic}, tags=req.tags,
        ))  # fmt: skip

    @endpoint("facts", request=FactQuery, reply=MemoryList)
    async def facts(self, req: FactQuery) -> MemoryList:
        where = ["memory_type = 'knowledge_fact'", "NOT deleted"]
        if req.topic:
            where.append(f"metadata ->> 'topic' = {lit(req.topic)}")
        if req.query:
            where.append(f"content ILIKE {lit('%' + req.query + '%')}")
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM memories WHERE {' AND '.join(where)} "
            f"ORDER BY importance DESC, created_at LIMIT {max(1, min(req.limit, 1000))}"
        )
        return MemoryList(results=[MemoryHit(memory=record_from_row(r), score=1.0) for r in rows])

    # ---- decay --------------------------------------------------------------------------------
    @endpoint("decay", request=Empty, reply=MemoryList)
    async def decay_now(self, req: Empty) -> MemoryList:
        """Run one decay sweep now; the reply lists (up to 100 of) the memories it changed."""
        changed = await self.sweep(time.time())
        return MemoryList(results=[MemoryHit(memory=m, score=0.0) for m in changed[:100]])

    async def sweep(self, now: float) -> list[MemoryRecord]:
        """Decay every live memory to ``now``; one ``memory.decayed.v1`` per changed memory."""
        rows = await self._read(f"SELECT {_COLUMNS} FROM memories WHERE NOT deleted")
        changed = []
        for row in rows:
            record = record_from_row(row)
            since = record.updated_at or record.created_at or now
            importance, tier = decay(record.importance, record.tier, now - since)
            if abs(importance - record.importance) < 1e-4 and tier == record.tier:
                continue
            await self._write(ev.MemoryDecayed(
                memory_id=record.memory_id, importance=importance, tier=tier, source=self.name,
            ))  # fmt: skip
            changed.append(record)
        return changed

    async def _decay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.decay_every_s)
            try:
                await self.sweep(time.time())
            except (ProjectionError, ServiceCallError) as exc:
                self.log.warning("decay sweep skipped", extra={"error": str(exc)})
