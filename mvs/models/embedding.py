"""The sentence-embedding backend: MiniLM (all-MiniLM-L6-v2) with transformers and torch.

Embeddings are the mean of the token vectors over the attention mask, L2-normalised, as the
sentence-transformers pooling config of the packaged model says; the dot product of two
vectors is then their cosine similarity.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mvs.errors import ModelError
from mvs.models.backends import ModelSpec, resolve_path

__all__ = ["EmbeddingModel", "load_embedding"]


class EmbeddingModel:
    """A loaded sentence-embedding model."""

    def __init__(self, spec: ModelSpec, tokenizer: Any, model: Any) -> None:
        self.spec = spec
        self._tokenizer = tokenizer
        self._model = model
        self._lock = threading.Lock()
        self.dimension = int(model.config.hidden_size)
        self.last_ms = 0.0

    def embed(self, texts: list[str], *, max_length: int = 256) -> list[list[float]]:
        """One normalised vector per text (blocking; call it from a worker thread)."""
        import torch

        if not texts:
            return []
        with self._lock:
            if self._model is None:
                raise ModelError(f"model {self.spec.model_id!r} is unloaded")
            started = time.perf_counter()
            batch = self._tokenizer(
                texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
            self.last_ms = (time.perf_counter() - started) * 1000.0
        return [[float(x) for x in row] for row in vectors.tolist()]

    def close(self) -> None:
        with self._lock:
            self._model = None
            self._tokenizer = None


def load_embedding(spec: ModelSpec) -> EmbeddingModel:
    """Load a transformers encoder from its package folder, offline only."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    model.eval()
    return EmbeddingModel(spec, tokenizer, model)
