"""Audio in and out of the speech models: WAV/PCM16 decoding, WAV encoding, resampling.

Whisper wants mono float32 at 16 kHz; Piper gives int16 at its voice's rate (22.05 kHz for
``en_US-joe-medium``). Callers send WAV files or raw little-endian PCM16 with a sample rate.
Every malformed input is a :class:`AudioError` (a ``ValueError``, so a service answers 400)
naming what is wrong, never a traceback from the ``wave`` module.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mvs.errors import MvsError

__all__ = [
    "WHISPER_RATE",
    "Audio",
    "AudioError",
    "AudioFormat",
    "decode_audio",
    "encode_wav",
    "resample",
]

WHISPER_RATE = 16000
MAX_AUDIO_S = 600.0

AudioFormat = Literal["wav", "pcm16"]


class AudioError(MvsError, ValueError):
    """Audio bytes that cannot be decoded; the message says why."""


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] and their sample rate."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return float(len(self.samples)) / float(self.rate) if self.rate else 0.0


def _pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    if width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:  # WAV 8-bit is unsigned
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float32) / float(1 << 23)
    else:
        raise AudioError(f"unsupported WAV sample width of {width} bytes")
    if channels > 1:
        usable = len(data) - len(data) % channels
        data = data[:usable].reshape(-1, channels).mean(axis=1)
    return np.ascontiguousarray(data, dtype=np.float32)


def decode_audio(data: bytes, *, fmt: AudioFormat = "wav", sample_rate: int = 16000) -> Audio:
    """Decode WAV bytes (any PCM width, any channels) or raw little-endian PCM16 mono."""
    if not data:
        raise AudioError("audio is empty")
    if fmt == "pcm16":
        if not 1000 <= sample_rate <= 192000:
            raise AudioError(f"sample_rate must be 1000..192000 Hz, got {sample_rate}")
        if len(data) % 2:
            raise AudioError(f"PCM16 audio must have an even number of bytes, got {len(data)}")
        audio = Audio(_pcm_to_float(data, 2, 1), sample_rate)
    elif fmt == "wav":
        if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
            raise AudioError(
                "audio is not a WAV file (no RIFF/WAVE header); send format='pcm16' for raw samples"
            )
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
                raw = w.readframes(w.getnframes())
        except (wave.Error, EOFError) as exc:
            raise AudioError(f"audio is not a readable PCM WAV file: {exc}") from exc
        if rate <= 0 or channels <= 0:
            raise AudioError(f"WAV header is broken: {rate} Hz, {channels} channel(s)")
        audio = Audio(_pcm_to_float(raw, width, channels), rate)
    else:
        raise AudioError(f"unknown audio format {fmt!r}: use 'wav' or 'pcm16'")
    if len(audio.samples) == 0:
        raise AudioError("audio holds no samples")
    if audio.seconds > MAX_AUDIO_S:
        raise AudioError(f"audio is {audio.seconds:.0f} s long; the limit is {MAX_AUDIO_S:.0f} s")
    return audio


def resample(audio: Audio, rate: int) -> Audio:
    """Polyphase resampling (anti-aliased) to ``rate``; a no-op at the same rate."""
    if audio.rate == rate:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(audio.rate, rate)
    out = resample_poly(audio.samples, rate // g, audio.rate // g).astype(np.float32)
    return Audio(out, rate)


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """Mono PCM16 WAV bytes from int16 samples or float samples in [-1, 1]."""
    if samples.dtype != np.int16:
        samples = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()
