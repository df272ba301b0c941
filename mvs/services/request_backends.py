"""CacheManager and MemoryOrchestratorService as the request pipeline uses them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mvs.rpc import ServiceClient
from mvs.services.cache import CacheGet, CacheReply, CacheSet
from mvs.services.memory_api import MemoryAdd, MemoryList, MemoryRef, MemorySearch

if TYPE_CHECKING:
    from mvs.services.request_pipeline import RequestState

__all__ = ["ANSWER_CACHE", "ServiceBackends"]

# The legacy CacheManager type for a model's answers (TTL 10 min).
ANSWER_CACHE = "model_decisions"


class ServiceBackends:
    """CacheManager and MemoryOrchestratorService as the pipeline uses them.

    Both are optimisations of a request, not conditions of it: a failure or a timeout counts
    as a miss / no context, the stage is marked not ok, and the request goes on.
    """

    def __init__(self, client: ServiceClient, *, timeout_s: float = 2.0) -> None:
        self.client = client
        self.timeout_s = timeout_s

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        reply = await self.client.call(
            "CacheManager", "get", CacheGet(cache_type=ANSWER_CACHE, key=key), CacheReply,
            timeout=self.timeout_s,
        )
        return reply.value if reply.hit and isinstance(reply.value, dict) else None

    async def cache_set(self, key: str, value: dict[str, Any]) -> None:
        await self.client.call(
            "CacheManager", "set", CacheSet(cache_type=ANSWER_CACHE, key=key, value=value),
            CacheReply, timeout=self.timeout_s,
        )

    async def recall(self, text: str, session_id: str | None, limit: int) -> list[str]:
        found = await self.client.call(
            "MemoryOrchestratorService",
            "search",
            MemorySearch(query=text, limit=limit, min_score=0.35),
            MemoryList,
            timeout=self.timeout_s,
        )
        return [hit.memory.content for hit in found.results]

    async def remember(self, state: RequestState) -> None:
        req = state.request
        await self.client.call(
            "MemoryOrchestratorService",
            "add",
            MemoryAdd(
                content=f"User: {state.text}\nAssistant: {state.answer}",
                memory_type="interaction",
                parent_id=req.session_id,
                session_id=req.session_id,
                metadata={"request_id": state.request_id, "route": state.route},
            ),
            MemoryRef,
            timeout=self.timeout_s,
        )
