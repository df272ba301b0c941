"""The local model as a chat backend: in-process through the pool, or via ModelManagerSuite."""

from __future__ import annotations

import asyncio

from mvs.errors import ModelError
from mvs.llm.types import ChatRequest, ChatResult
from mvs.models.llama import LlamaChatModel
from mvs.models.pool import ModelPool
from mvs.rpc import ServiceClient

__all__ = ["ModelChat", "PoolChat", "RemoteChat"]


class ModelChat:
    """Chat with one already loaded model, outside any pool (benchmarks, tests, tools)."""

    def __init__(self, model: LlamaChatModel) -> None:
        self.model = model

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await asyncio.to_thread(self.model.chat, request)


class PoolChat:
    """Chat with a pool model in this process (the model runs in a worker thread)."""

    def __init__(self, pool: ModelPool, model_id: str) -> None:
        self.pool = pool
        self.model_id = model_id

    async def chat(self, request: ChatRequest) -> ChatResult:
        model_id = request.model_id or self.model_id
        async with self.pool.use(model_id) as model:
            if not isinstance(model, LlamaChatModel):
                raise ModelError(f"model {model_id!r} is not a chat model")
            return await asyncio.to_thread(model.chat, request)


class RemoteChat:
    """Chat through the ModelManagerSuite service (``generate``), wherever it runs."""

    def __init__(
        self,
        client: ServiceClient,
        model_id: str,
        *,
        service: str = "ModelManagerSuite",
        timeout_s: float = 120.0,
    ) -> None:
        self.client = client
        self.model_id = model_id
        self.service = service
        self.timeout_s = timeout_s

    async def chat(self, request: ChatRequest) -> ChatResult:
        if not request.model_id:
            request = ChatRequest(
                messages=request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
                model_id=self.model_id,
            )
        return await self.client.call(
            self.service, "generate", request, ChatResult, timeout=self.timeout_s
        )
