"""An async client for OpenAI-compatible chat completion endpoints (the "cloud_api" route).

It speaks ``POST {base_url}/chat/completions`` as OpenAI, vLLM, llama.cpp's server and most
gateways do. No HTTP library is a dependency of MVS (aiohttp and httpx are not installed), so
the request goes through :mod:`urllib.request` in a worker thread: one blocking call per
completion costs a thread for its duration, which is nothing next to a remote model's
latency, and urllib brings TLS, proxies and chunked replies for free.

Every failure is an :class:`~mvs.errors.UpstreamError` that says what went wrong (refused,
timed out, HTTP status with the start of the body, or a reply that is not a completion); the
router counts them against the circuit breaker and falls back to the local model.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import msgspec

from mvs.errors import UpstreamError
from mvs.llm.types import ChatRequest, ChatResult

__all__ = ["CloudChatClient"]


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    model: str = ""
    usage: _Usage | None = None


_decode = msgspec.json.Decoder(_Completion).decode


class CloudChatClient:
    """Chat completions from ``base_url`` (e.g. ``https://api.openai.com/v1``)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 20.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UpstreamError(f"cloud endpoint must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self._api_key = api_key

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    async def chat(self, request: ChatRequest) -> ChatResult:
        body = json.dumps(
            {
                "model": request.model_id or self.model,
                "messages": [{"role": m.role, "content": m.content} for m in request.messages],
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "seed": request.seed,
            }
        ).encode()
        started = time.perf_counter()
        raw = await asyncio.to_thread(self._post, body)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        try:
            completion = _decode(raw)
            choice = completion.choices[0]
        except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
            raise UpstreamError(
                f"{self.url} answered with something that is not a chat completion: {exc}"
            ) from exc
        usage = completion.usage or _Usage()
        return ChatResult(
            text=(choice.message.content or "").strip(),
            model=completion.model or self.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=choice.finish_reason or "",
            model_ms=elapsed_ms,
        )

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip()
            raise UpstreamError(f"{self.url} answered HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise UpstreamError(f"{self.url} is unreachable: {exc.reason}") from exc
        except TimeoutError as exc:
            raise UpstreamError(f"{self.url} did not answer within {self.timeout_s} s") from exc
        except OSError as exc:  # connection reset mid-reply and the like
            raise UpstreamError(f"{self.url} failed: {exc}") from exc
