"""Chat messages and results shared by the local model, the cloud client and the router.

They are frozen msgspec Structs, so they also serve as the request and reply payloads of the
ModelManagerSuite ``generate`` endpoint without a second set of types.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["ChatMessage", "ChatRequest", "ChatResult", "Role"]

Role = Literal["system", "user", "assistant"]


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: Role
    content: str


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A chat completion request. ``temperature=0`` with a fixed ``seed`` is deterministic."""

    messages: list[ChatMessage]
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 42
    model_id: str = ""


class ChatResult(msgspec.Struct, frozen=True, kw_only=True):
    """A completion and where its time went (``model_ms``: inside the model call only)."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    model_ms: float = 0.0
