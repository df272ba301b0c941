"""Emotion signals without a trained classifier: a sentiment lexicon and voice prosody.

No PyPI package ships an emotion classifier (``/work/shared/MODELS.md``), so MVS reads two
honest signals:

- **Text**: :class:`Lexicon` scores words from ``emotion_lexicon.tsv`` (MVS's own list:
  word, valence -1..1, emotion), with the usual rules of lexicon scorers (VADER's among them):
  a negation in the three words before flips and damps a word, intensifiers scale it,
  exclamation marks and shouted (all-caps) words raise intensity, and the sum is squashed
  into -1..1 as ``s / sqrt(s*s + 15)``.
- **Voice**: :func:`prosody` measures pitch (autocorrelation per 40 ms frame, 60-400 Hz),
  pitch variation (semitones), loudness (RMS dBFS), the voiced share and a speaking rate
  (syllable-like peaks of the loudness envelope per second, or words per second when the
  transcript is known).

:func:`tone_of` turns both into a tone label, relative to a speaker's own baseline when one is
known (a naturally loud speaker is not "agitated" for being loud).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from mvs.errors import ModelError
from mvs.models.audio import Audio

__all__ = [
    "LEXICON_PATH",
    "Lexicon",
    "Prosody",
    "TextAffect",
    "default_lexicon",
    "prosody",
    "tone_of",
]

LEXICON_PATH = Path(__file__).with_name("emotion_lexicon.tsv")

NEGATIONS = frozenset({
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "cannot", "cant",
    "can't", "don't", "dont", "doesn't", "doesnt", "didn't", "didnt", "isn't", "isnt", "wasn't",
    "wasnt", "aren't", "arent", "won't", "wont", "wouldn't", "wouldnt", "shouldn't",
    "shouldnt", "couldn't", "couldnt", "hardly",
})  # fmt: skip
INTENSIFIERS = {
    "very": 1.4, "really": 1.4, "so": 1.3, "extremely": 1.8, "totally": 1.5, "too": 1.2,
    "absolutely": 1.6, "super": 1.5, "incredibly": 1.7, "completely": 1.5, "most": 1.3,
    "slightly": 0.5, "somewhat": 0.6, "little": 0.6, "bit": 0.6, "barely": 0.4,
}  # fmt: skip
PHRASES = {
    "don't understand": ("confusion", -0.4), "do not understand": ("confusion", -0.4),
    "makes no sense": ("confusion", -0.5), "what do you mean": ("confusion", -0.3),
    "not working": ("frustration", -0.6), "doesn't work": ("frustration", -0.6),
    "thank you": ("gratitude", 0.7), "no problem": ("calm", 0.3),
}  # fmt: skip
NEGATED = {"joy": "sadness", "gratitude": "frustration", "calm": "frustration",
           "sadness": "calm", "anger": "calm", "fear": "calm", "frustration": "calm",
           "confusion": "calm", "surprise": "calm"}  # fmt: skip
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


@dataclass(frozen=True)
class TextAffect:
    sentiment: float  # -1..1
    intensity: float  # 0..1
    emotion: str
    scores: dict[str, float] = field(default_factory=dict)
    matched: tuple[str, ...] = ()


class Lexicon:
    """Valence and emotion per word; ``word*`` entries match by prefix."""

    def __init__(self, entries: dict[str, tuple[float, str]]) -> None:
        self.exact = {w: e for w, e in entries.items() if not w.endswith("*")}
        self.prefixes = sorted(
            ((w[:-1], e) for w, e in entries.items() if w.endswith("*")),
            key=lambda p: -len(p[0]),
        )

    @classmethod
    def load(cls, path: Path = LEXICON_PATH) -> Lexicon:
        entries: dict[str, tuple[float, str]] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ModelError(f"emotion lexicon {path} cannot be read: {exc}") from exc
        for n, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            try:
                word, valence, emotion = parts[0].strip().lower(), float(parts[1]), parts[2]
            except (IndexError, ValueError) as exc:
                raise ModelError(f"{path}:{n}: expected word<TAB>valence<TAB>emotion") from exc
            entries[word] = (max(-1.0, min(1.0, valence)), emotion.strip())
        return cls(entries)

    def lookup(self, word: str) -> tuple[float, str] | None:
        found = self.exact.get(word)
        if found is not None:
            return found
        for prefix, entry in self.prefixes:
            if word.startswith(prefix):
                return entry
        return None

    def score(self, text: str) -> TextAffect:
        words = _WORD.findall(text)
        lowered = [w.lower() for w in words]
        total = 0.0
        strength = 0.0
        scores: dict[str, float] = {}
        matched: list[str] = []
        consumed: set[int] = set()
        for phrase, (emotion, valence) in PHRASES.items():
            tokens = phrase.split()
            for i in range(len(lowered) - len(tokens) + 1):
                if lowered[i : i + len(tokens)] == tokens:
                    consumed.update(range(i, i + len(tokens)))
                    total += valence
                    strength += abs(valence)
                    scores[emotion] = scores.get(emotion, 0.0) + abs(valence)
                    matched.append(phrase)
        for i, word in enumerate(lowered):
            entry = None if i in consumed else self.lookup(word)
            if entry is None:
                continue
            valence, emotion = entry
            before = lowered[max(0, i - 3) : i]
            for w in before:
                valence *= INTENSIFIERS.get(w, 1.0)
            if words[i].isupper() and len(words[i]) > 1:
                valence *= 1.3  # shouted
            if any(w in NEGATIONS for w in before):
                valence *= -0.74
                emotion = NEGATED.get(emotion, emotion)
            total += valence
            strength += min(1.0, abs(valence))
            scores[emotion] = scores.get(emotion, 0.0) + max(abs(valence), 0.2)
            matched.append(word)
        exclaims = min(text.count("!"), 4)
        if total:
            total += math.copysign(0.1 * exclaims, total)
        sentiment = total / math.sqrt(total * total + 15.0) if total else 0.0
        shouted = sum(1 for w in words if w.isupper() and len(w) > 1)
        intensity = strength / max(1, len(matched)) if matched else 0.0
        intensity = min(1.0, intensity * (1.0 + 0.12 * exclaims + 0.1 * min(shouted, 3)))
        emotion = max(scores, key=lambda k: scores[k]) if scores else "neutral"
        return TextAffect(
            sentiment=round(max(-1.0, min(1.0, sentiment)), 4),
            intensity=round(intensity, 4),
            emotion=emotion,
            scores={k: round(v, 3) for k, v in scores.items()},
            matched=tuple(matched),
        )


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    return Lexicon.load()


@dataclass(frozen=True)
class Prosody:
    pitch_hz: float  # median over voiced frames; 0 when nothing is voiced
    pitch_var_st: float  # standard deviation in semitones
    energy_db: float  # mean RMS of speech frames, dBFS
    voiced_ratio: float
    rate_per_s: float  # syllable-like peaks (or words) per second of speech
    duration_s: float


def prosody(audio: Audio, *, words: int | None = None) -> Prosody:
    """Pitch, loudness and rate of mono audio (any rate; frames of 40 ms, hop 10 ms)."""
    x = audio.samples.astype(np.float64)
    sr = audio.rate
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(frame)[None, :]
    rms = np.sqrt(np.mean(frames**2, axis=1)) + 1e-10
    db = 20.0 * np.log10(rms)
    speech = db > max(db.max() - 35.0, -60.0)
    # autocorrelation through the FFT; a frame is voiced when its best lag in 60-400 Hz
    # correlates above 0.45 of the zero lag
    spec = np.fft.rfft(frames, n=2 * frame, axis=1)
    ac = np.fft.irfft(spec * np.conj(spec), axis=1)[:, :frame]
    lo, hi = int(sr / 400.0), min(int(sr / 60.0), frame - 1)
    lags = np.argmax(ac[:, lo:hi], axis=1) + lo
    peak = ac[np.arange(n), lags] / (ac[:, 0] + 1e-12)
    voiced = speech & (peak > 0.45)
    pitches = sr / lags[voiced] if voiced.any() else np.zeros(0)
    pitch = float(np.median(pitches)) if len(pitches) else 0.0
    var = float(np.std(12.0 * np.log2(pitches / pitch))) if len(pitches) > 2 and pitch else 0.0
    speech_s = max(float(speech.sum()) * hop / sr, 1e-3)
    if words is not None:
        rate = words / speech_s
    else:
        env = np.convolve(rms, np.ones(5) / 5.0, mode="same")
        is_peak = (env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]) & voiced[1:-1]
        thresholds = env[1:-1] > 1.5 * np.median(env[speech]) if speech.any() else is_peak
        peaks = np.flatnonzero(is_peak & thresholds)
        # two nuclei closer than 100 ms are one syllable
        count = int(np.sum(np.diff(peaks) > 10)) + 1 if len(peaks) else 0
        rate = count / speech_s
    return Prosody(
        pitch_hz=round(pitch, 1),
        pitch_var_st=round(var, 3),
        energy_db=round(float(db[speech].mean()) if speech.any() else -100.0, 2),
        voiced_ratio=round(float(voiced.sum()) / n, 3),
        rate_per_s=round(rate, 3),
        duration_s=round(audio.seconds, 3),
    )


# Defaults for a speaker with no profile yet: the packaged Piper voice at its normal speed
# and volume, measured with :func:`prosody` (its semitone spread includes the tracker's
# occasional octave errors, which a live speaker's measurements share).
BASELINE = Prosody(pitch_hz=120.0, pitch_var_st=6.5, energy_db=-27.0, voiced_ratio=0.4,
                   rate_per_s=3.0, duration_s=0.0)  # fmt: skip


def tone_of(
    text: TextAffect | None, voice: Prosody | None, baseline: Prosody | None = None
) -> str:
    """A tone label: excited, agitated, subdued, calm or neutral."""
    base = baseline or BASELINE
    arousal = 0.0
    if voice is not None and voice.pitch_hz > 0:
        arousal += (voice.energy_db - base.energy_db) / 6.0
        arousal += (voice.pitch_var_st - base.pitch_var_st) / 2.0
        arousal += (voice.rate_per_s - base.rate_per_s) / 2.0
    if text is not None:
        arousal += 4.0 * (text.intensity - 0.45) if text.matched else 0.0
    sentiment = text.sentiment if text is not None else 0.0
    if arousal > 1.0:
        return "agitated" if sentiment < -0.1 else "excited"
    if arousal < -1.0:
        return "subdued" if sentiment < 0.1 else "calm"
    return "neutral"
