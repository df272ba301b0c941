"""The llama.cpp backend: chat completion with a GGUF model (SmolLM2 by default)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from mvs.errors import ModelError
from mvs.llm.types import ChatRequest, ChatResult
from mvs.models.backends import ModelSpec, resolve_path

__all__ = ["LlamaChatModel", "load_llama"]


class LlamaChatModel:
    """A loaded GGUF chat model. Calls are serialised: a llama context is not thread-safe."""

    def __init__(self, spec: ModelSpec, llama: Any) -> None:
        self.spec = spec
        self._llama = llama
        self._lock = threading.Lock()

    def chat(self, request: ChatRequest) -> ChatResult:
        """Run one chat completion (blocking; call it from a worker thread)."""
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        with self._lock:
            if self._llama is None:
                raise ModelError(f"model {self.spec.model_id!r} is unloaded")
            self._llama.set_seed(request.seed)
            started = time.perf_counter()
            try:
                out = self._llama.create_chat_completion(
                    messages=messages,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    seed=request.seed,
                )
            except ValueError as exc:  # e.g. the prompt exceeds the context window
                raise ModelError(f"model {self.spec.model_id!r}: {exc}") from exc
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return ChatResult(
            text=str(choice["message"].get("content") or "").strip(),
            model=self.spec.model_id,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=str(choice.get("finish_reason") or ""),
            model_ms=elapsed_ms,
        )

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None


def load_llama(spec: ModelSpec) -> LlamaChatModel:
    """Load a GGUF file. Options: ``n_ctx`` (2048), ``n_threads``, ``use_mmap`` (False), ``warmup``.

    ``use_mmap`` is off by default so that the weights are read into the process at load
    time: the pool's RSS measurement then sees the model's real size, and closing it frees it.
    ``n_threads`` defaults to half the cores, as llama.cpp's own server does: on a small busy
    machine more threads than free cores makes generation several times slower, not faster.
    A one-token warm-up (on by default) allocates the compute buffers during the load, so the
    first request is not slow and the measured load memory includes them.
    """
    from llama_cpp import Llama

    path = resolve_path(spec)
    opts = dict(spec.options)
    llama = Llama(
        model_path=str(path),
        n_ctx=int(opts.pop("n_ctx", 2048)),
        n_threads=int(opts.pop("n_threads", max(1, (os.cpu_count() or 2) // 2))),
        use_mmap=bool(opts.pop("use_mmap", False)),
        verbose=False,
        **{k: v for k, v in opts.items() if k != "warmup"},
    )
    if opts.get("warmup", True):
        llama.create_completion("Hello", max_tokens=1, temperature=0.0)
    return LlamaChatModel(spec, llama)
