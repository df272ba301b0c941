"""EmotionService: the six legacy emotion agents as one service.

- EmotionEngine: ``update_emotional_state`` with ``emotional_cues {tone, sentiment -1..1,
  intensity 0..1}`` and ``get_emotional_state``, as the legacy engine (port 5590) took them;
  ``legacy`` answers the legacy ``{"action": ...}`` messages as they were.
- ToneDetector + VoiceProfilingAgent: ``analyze`` reads text (a sentiment lexicon) and audio
  (prosody: pitch, loudness, speaking rate, :mod:`mvs.models.emotion`); a session's voice
  profile (a running mean of its prosody) is the baseline its tone is judged against.
- MoodTrackerAgent: per session, an exponential moving average (``alpha``) of sentiment and
  intensity; the mood is the label of the average, not of the last utterance.
- HumanAwarenessAgent: ``attention`` flags a session whose mood stays negative (three negative
  updates in a row, or an average below -0.4).
- EmpathyAgent: ``empathy`` is a hint for the reply (style and one instruction) that the
  request pipeline can put in the model's system prompt.

Every update is an ``emotion.updated.v1`` event (the ``emotion_states`` projection keeps the
last per session). State lives in memory; a restarted service starts each session neutral.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Any

import msgspec

from mvs.models.audio import AudioFormat, decode_audio
from mvs.models.emotion import Prosody, TextAffect, default_lexicon, prosody, tone_of
from mvs.service import Service, ServiceContext, endpoint
from streams.events.language import EmotionStateUpdated

__all__ = [
    "AnalyzeReply",
    "AnalyzeRequest",
    "EmotionService",
    "EmotionalCues",
    "EmotionalState",
    "LegacyReply",
    "LegacyRequest",
    "MoodTracker",
    "SessionRef",
    "UpdateRequest",
    "emotion_from_cues",
    "empathy_hint",
]

TONES = frozenset({"neutral", "calm", "excited", "agitated", "subdued", "angry", "happy", "sad"})
HINTS = {
    "angry": ("calm", "Stay calm and brief: acknowledge the problem once, then give the fix."),
    "frustrated": ("patient", "Acknowledge the frustration, apologise once, give one clear step."),
    "sad": ("warm", "Be gentle and warm; offer help without being cheerful."),
    "anxious": ("reassuring", "Reassure first, then give short, concrete steps."),
    "excited": ("upbeat", "Match the energy briefly, then answer."),
    "happy": ("friendly", "Be friendly and keep it light."),
    "calm": ("plain", "Answer plainly."),
    "neutral": ("plain", "Answer plainly."),
}


class EmotionalCues(msgspec.Struct, frozen=True, kw_only=True):
    tone: str = "neutral"
    sentiment: float = 0.0
    intensity: float = 0.0


class UpdateRequest(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str = "default"
    emotional_cues: EmotionalCues = msgspec.field(default_factory=EmotionalCues)


class SessionRef(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str = "default"


class EmotionalState(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    emotion: str = "neutral"
    tone: str = "neutral"
    sentiment: float = 0.0
    intensity: float = 0.0
    mood: str = "neutral"
    mood_sentiment: float = 0.0  # the moving average
    mood_intensity: float = 0.0
    updates: int = 0
    attention: bool = False
    empathy: dict[str, str] = msgspec.field(default_factory=dict)
    updated_at: float = 0.0


class AnalyzeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: str | None = None
    audio: bytes | None = None
    format: AudioFormat = "wav"
    sample_rate: int = 16000
    session_id: str | None = None  # with a session, the analysis updates its state
    request_id: str | None = None


class LegacyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A legacy EmotionEngine message (unknown fields such as ``request_id`` are ignored)."""

    action: str = ""
    session_id: str = "default"
    emotional_cues: EmotionalCues | None = None


class LegacyReply(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    emotional_state: EmotionalState | None = None
    error: str | None = None


class AnalyzeReply(msgspec.Struct, frozen=True, kw_only=True):
    sentiment: float
    intensity: float
    emotion: str
    tone: str
    matched: list[str] = msgspec.field(default_factory=list)
    prosody: dict[str, float] | None = None
    state: EmotionalState | None = None
    model_ms: float = 0.0


def emotion_from_cues(tone: str, sentiment: float, intensity: float) -> str:
    """The legacy engine's label for a set of cues."""
    if sentiment <= -0.3:
        if tone in ("angry", "agitated"):
            return "angry" if intensity >= 0.5 else "frustrated"
        if tone == "excited":
            return "anxious"
        return "frustrated" if intensity >= 0.6 else "sad"
    if sentiment >= 0.3:
        return "excited" if intensity >= 0.6 or tone == "excited" else "happy"
    if tone in ("calm", "subdued"):
        return "calm"
    return {"angry": "angry", "excited": "excited", "sad": "sad", "happy": "happy"}.get(
        tone, "neutral"
    )


def empathy_hint(emotion: str, attention: bool) -> dict[str, str]:
    style, hint = HINTS.get(emotion, HINTS["neutral"])
    if attention:
        hint += " The user has been unhappy for a while: offer to try another way."
    return {"style": style, "hint": hint}


class _Session:
    def __init__(self) -> None:
        self.state: EmotionalState | None = None
        self.negatives = 0
        self.voice: Prosody | None = None
        self.voice_n = 0


class MoodTracker:
    """Per-session state: the last cues, their moving average, the voice profile."""

    def __init__(self, *, alpha: float = 0.3, max_sessions: int = 10_000) -> None:
        self.alpha = alpha
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def _session(self, session_id: str) -> _Session:
        found = self._sessions.get(session_id)
        if found is None:
            found = self._sessions[session_id] = _Session()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(session_id)
        return found

    def known(self, session_id: str) -> bool:
        return session_id in self._sessions

    def restore(self, state: EmotionalState) -> None:
        """Seed a session from a remembered state (the moving average goes on from it)."""
        self._session(state.session_id).state = state

    def get(self, session_id: str) -> EmotionalState:
        found = self._sessions.get(session_id)
        if found is None or found.state is None:
            return EmotionalState(session_id=session_id, empathy=empathy_hint("neutral", False))
        return found.state

    def baseline(self, session_id: str) -> Prosody | None:
        found = self._sessions.get(session_id)
        return found.voice if found is not None and found.voice_n >= 2 else None

    def add_voice(self, session_id: str, voice: Prosody) -> None:
        """Fold an utterance's prosody into the session's voice profile (a running mean)."""
        if voice.pitch_hz <= 0:
            return
        s = self._session(session_id)
        s.voice_n += 1
        if s.voice is None:
            s.voice = voice
            return
        w = 1.0 / min(s.voice_n, 20)  # a running mean that keeps adapting after 20 utterances
        old = s.voice
        s.voice = Prosody(
            pitch_hz=old.pitch_hz + w * (voice.pitch_hz - old.pitch_hz),
            pitch_var_st=old.pitch_var_st + w * (voice.pitch_var_st - old.pitch_var_st),
            energy_db=old.energy_db + w * (voice.energy_db - old.energy_db),
            voiced_ratio=old.voiced_ratio + w * (voice.voiced_ratio - old.voiced_ratio),
            rate_per_s=old.rate_per_s + w * (voice.rate_per_s - old.rate_per_s),
            duration_s=0.0,
        )

    def update(self, session_id: str, cues: EmotionalCues, *, now: float) -> EmotionalState:
        tone = cues.tone.strip().lower() or "neutral"
        if not -1.0 <= cues.sentiment <= 1.0:
            raise ValueError(f"sentiment must be -1..1, got {cues.sentiment}")
        if not 0.0 <= cues.intensity <= 1.0:
            raise ValueError(f"intensity must be 0..1, got {cues.intensity}")
        if tone not in TONES:
            raise ValueError(f"unknown tone {cues.tone!r} (known: {', '.join(sorted(TONES))})")
        s = self._session(session_id)
        prev = s.state
        a = self.alpha
        if prev is None:
            mood_s, mood_i = cues.sentiment, cues.intensity
        else:
            mood_s = (1 - a) * prev.mood_sentiment + a * cues.sentiment
            mood_i = (1 - a) * prev.mood_intensity + a * cues.intensity
        s.negatives = s.negatives + 1 if cues.sentiment < -0.1 else 0
        attention = s.negatives >= 3 or mood_s < -0.4
        emotion = emotion_from_cues(tone, cues.sentiment, cues.intensity)
        mood = emotion_from_cues("neutral", mood_s, mood_i)
        s.state = EmotionalState(
            session_id=session_id,
            emotion=emotion,
            tone=tone,
            sentiment=round(cues.sentiment, 4),
            intensity=round(cues.intensity, 4),
            mood=mood,
            mood_sentiment=round(mood_s, 4),
            mood_intensity=round(mood_i, 4),
            updates=(prev.updates if prev else 0) + 1,
            attention=attention,
            empathy=empathy_hint(emotion if emotion != "neutral" else mood, attention),
            updated_at=now,
        )
        return s.state


class EmotionService(Service):
    """Sentiment, tone, mood, voice profile and empathy hints per session."""

    name = "EmotionService"

    def __init__(
        self, ctx: ServiceContext, *, alpha: float = 0.3, heartbeat_s: float | None = None
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        self.tracker = MoodTracker(alpha=alpha)
        self.lexicon = default_lexicon()
        self._asked: OrderedDict[str, None] = OrderedDict()

    def _record(self, state: EmotionalState, cues: dict[str, Any]) -> None:
        self.ctx.events.emit(
            EmotionStateUpdated(
                session_id=state.session_id, emotion=state.emotion, tone=state.tone,
                sentiment=state.sentiment, intensity=state.intensity,
                cues={**cues, "mood": state.mood, "mood_sentiment": state.mood_sentiment,
                      "mood_intensity": state.mood_intensity, "updates": state.updates,
                      "attention": state.attention},
                source=self.name,
            )
        )  # fmt: skip

    async def restore(self, session_id: str) -> None:
        """A session this instance has not seen continues from the ``emotion_states``
        projection (a restarted service keeps each session's mood); once per session."""
        if self.tracker.known(session_id) or session_id in self._asked:
            return
        from mvs.services.translation import query_projection, sql_text

        self._asked[session_id] = None
        while len(self._asked) > 10_000:
            self._asked.popitem(last=False)
        rows = await query_projection(self.ctx.nc, (
            "SELECT emotion, tone, sentiment, intensity, occurred_at, CAST(cues AS VARCHAR) AS "
            f"cues FROM emotion_states WHERE session_id = {sql_text(session_id)}"
        ), timeout=0.5)  # fmt: skip
        if not rows or self.tracker.known(session_id):
            return
        row = rows[0]
        cues = msgspec.json.decode(row["cues"] or "{}")
        cues = cues if isinstance(cues, dict) else {}
        emotion = str(row["emotion"] or "neutral")
        attention = bool(cues.get("attention", False))
        self.tracker.restore(EmotionalState(
            session_id=session_id, emotion=emotion, tone=str(row["tone"] or "neutral"),
            sentiment=float(row["sentiment"] or 0.0), intensity=float(row["intensity"] or 0.0),
            mood=str(cues.get("mood", emotion)),
            mood_sentiment=float(cues.get("mood_sentiment", row["sentiment"] or 0.0)),
            mood_intensity=float(cues.get("mood_intensity", row["intensity"] or 0.0)),
            updates=int(cues.get("updates", 1)), attention=attention,
            empathy=empathy_hint(emotion, attention), updated_at=float(row["occurred_at"] or 0),
        ))  # fmt: skip

    def update(self, session_id: str, cues: EmotionalCues, extra: dict[str, Any]) -> EmotionalState:
        if not session_id.strip():
            raise ValueError("session_id must not be empty")
        state = self.tracker.update(session_id, cues, now=time.time())
        self._record(state, {"tone": cues.tone, **extra})
        return state

    @endpoint("update_emotional_state", request=UpdateRequest, reply=EmotionalState)
    async def update_emotional_state(self, req: UpdateRequest) -> EmotionalState:
        await self.restore(req.session_id)
        return self.update(req.session_id, req.emotional_cues, {})

    @endpoint("get_emotional_state", request=SessionRef, reply=EmotionalState, record=False)
    async def get_emotional_state(self, req: SessionRef) -> EmotionalState:
        await self.restore(req.session_id)
        return self.tracker.get(req.session_id)

    @endpoint("analyze", request=AnalyzeRequest, reply=AnalyzeReply, concurrency=4)
    async def analyze(self, req: AnalyzeRequest) -> AnalyzeReply:
        started = time.perf_counter()
        text = (req.text or "").strip()
        if not text and not req.audio:
            raise ValueError("analyze needs text, audio or both")
        affect: TextAffect | None = self.lexicon.score(text) if text else None
        voice: Prosody | None = None
        if req.audio:
            audio = decode_audio(req.audio, fmt=req.format, sample_rate=req.sample_rate)
            words = len(text.split()) if text else None
            voice = prosody(audio, words=words)
        baseline = self.tracker.baseline(req.session_id) if req.session_id else None
        tone = tone_of(affect, voice, baseline)
        sentiment = affect.sentiment if affect else 0.0
        intensity = affect.intensity if affect else 0.0
        if voice is not None and affect is None:
            # voice only: arousal stands in for intensity, sentiment stays unknown (0)
            intensity = {"agitated": 0.8, "excited": 0.7, "neutral": 0.4}.get(tone, 0.2)
        emotion = emotion_from_cues(tone, sentiment, intensity)
        if affect is not None and affect.emotion in ("confusion", "fear", "gratitude"):
            emotion = {"confusion": "confused", "fear": "anxious", "gratitude": "happy"}[
                affect.emotion
            ]
        state = None
        if req.session_id:
            await self.restore(req.session_id)
        prosody_dict = dataclasses.asdict(voice) if voice is not None else None
        if req.session_id:
            if voice is not None:
                self.tracker.add_voice(req.session_id, voice)
            cues = EmotionalCues(tone=tone, sentiment=sentiment, intensity=intensity)
            extra: dict[str, Any] = {"text_emotion": affect.emotion if affect else None}
            if prosody_dict:
                extra["prosody"] = prosody_dict
            state = self.update(req.session_id, cues, extra)
        return AnalyzeReply(
            sentiment=sentiment,
            intensity=intensity,
            emotion=emotion,
            tone=tone,
            matched=list(affect.matched) if affect else [],
            prosody=prosody_dict,
            state=state,
            model_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )

    @endpoint("legacy", request=LegacyRequest, reply=LegacyReply)
    async def legacy(self, req: LegacyRequest) -> LegacyReply:
        """The legacy EmotionEngine's ``{"action": ...}`` messages; errors are ``status: error``."""
        await self.restore(req.session_id)
        try:
            if req.action == "update_emotional_state":
                state = self.update(req.session_id, req.emotional_cues or EmotionalCues(), {})
            elif req.action == "get_emotional_state":
                state = self.tracker.get(req.session_id)
            elif req.action in ("health_check", "health"):
                return LegacyReply(status="ok")
            else:
                raise ValueError(
                    f"unknown action {req.action!r} (known: update_emotional_state, "
                    "get_emotional_state, health_check)"
                )
        except ValueError as exc:
            return LegacyReply(status="error", error=str(exc))
        return LegacyReply(status="success", emotional_state=state)
