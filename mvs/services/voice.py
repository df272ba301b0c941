"""The voice path: STT -> (translation) -> RequestCoordinator -> (translation) -> TTS.

:class:`VoicePipeline` answers an :class:`AudioRequest` (the legacy ``{"type": "audio",
"audio_data"}`` request, typed): it transcribes the audio with STTService, translates a
non-English transcript to English with TranslationService, hands the text to a text handler
(RequestCoordinator's ``text`` endpoint over NATS by default, or a
:class:`~mvs.services.request_pipeline.Pipeline` in the same process), translates the answer
back, lets EmotionService read the utterance (text and voice) for the session, and speaks the
answer with TTSService when ``speak`` is set. Each step is timed like a pipeline stage.

The text pipeline's own hooks are :class:`TranslationStage` (a ``pre`` stage putting a
non-English request into English) and :class:`EmotionStage` (a ``pre`` stage recording the
session's emotional state); :func:`install` adds them to a pipeline. STTService serves the
voice path today as its ``converse`` endpoint; RequestCoordinator can serve it as ``audio``
with ``VoicePipeline(client, text_handler=self.pipeline.handle)``.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from mvs.errors import ServiceCallError
from mvs.flags import FlagStore
from mvs.models.audio import AudioFormat
from mvs.rpc import ServiceClient
from mvs.services.emotion import AnalyzeReply, AnalyzeRequest
from mvs.services.request_pipeline import (
    Pipeline,
    RequestState,
    StageTiming,
    TextReply,
    TextRequest,
)
from mvs.services.translation import TranslateReply, TranslateRequest, detect_language
from mvs.services.tts import SynthesizeReply, SynthesizeRequest

__all__ = [
    "FLAG_EMOTION",
    "AudioReply",
    "AudioRequest",
    "EmotionStage",
    "TextHandler",
    "TranslationStage",
    "VoicePipeline",
    "from_legacy",
    "install",
]

TextHandler = Callable[[TextRequest], Awaitable[TextReply]]
FLAG_EMOTION = "use_consolidated_emotion"


class AudioRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    audio: bytes
    format: AudioFormat = "wav"
    sample_rate: int = 16000
    language: str | None = None  # the speaker's language; None = English
    session_id: str | None = None
    user_id: str | None = None
    priority: int = 5
    max_tokens: int = 96
    speak: bool = True
    request_id: str | None = None


class AudioReply(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    transcript: str
    language: str
    text: str  # the answer, in the speaker's language
    route: str
    latency_ms: float
    stages: list[StageTiming]
    audio: bytes | None = None
    sample_rate: int = 0
    emotion: str = ""


def from_legacy(
    audio_data: str | bytes,
    *,
    session_id: str | None = None,
    user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AudioRequest:
    """The legacy ``{"type": "audio", "audio_data": <base64 WAV>, ...}`` request, typed.

    ``metadata.language`` / ``metadata.sample_rate`` / ``metadata.format`` are honoured and
    ``metadata.urgency`` maps to a priority as for text requests.
    """
    meta = metadata or {}
    if isinstance(audio_data, str):
        try:
            raw = base64.b64decode(audio_data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"audio_data is not valid base64: {exc}") from exc
    else:
        raw = audio_data
    urgency = str(meta.get("urgency", "normal")).lower()
    fmt = str(meta.get("format", "wav"))
    if fmt not in ("wav", "pcm16"):
        raise ValueError(f"metadata.format must be 'wav' or 'pcm16', got {fmt!r}")
    return AudioRequest(
        audio=raw, format="pcm16" if fmt == "pcm16" else "wav",
        sample_rate=int(meta.get("sample_rate", 16000)), language=meta.get("language"),
        session_id=session_id, user_id=user_id,
        priority={"critical": 0, "high": 1, "urgent": 1, "low": 8}.get(urgency, 5),
    )  # fmt: skip


class VoicePipeline:
    """One spoken request, end to end, over the speech, translation and text services."""

    def __init__(
        self,
        client: ServiceClient,
        *,
        text_handler: TextHandler | None = None,
        emotion: bool = True,
        timeout_s: float = 120.0,
    ) -> None:
        self.client = client
        self.text_handler = text_handler or self._remote_text
        self.emotion = emotion
        self.timeout_s = timeout_s

    async def _remote_text(self, req: TextRequest) -> TextReply:
        return await self.client.call("RequestCoordinator", "text", req, TextReply,
                                      timeout=self.timeout_s)  # fmt: skip

    async def _translate(self, text: str, src: str, tgt: str) -> str:
        reply = await self.client.call(
            "TranslationService", "translate",
            TranslateRequest(text=text, source_lang=src, target_lang=tgt), TranslateReply,
            timeout=self.timeout_s,
        )  # fmt: skip
        return reply.translation

    async def handle(self, req: AudioRequest) -> AudioReply:
        started = time.perf_counter()
        request_id = req.request_id or f"v-{uuid.uuid4().hex[:16]}"
        stages: list[StageTiming] = []

        def mark(stage: str, t0: float, detail: str = "", ok: bool = True) -> None:
            ms = round((time.perf_counter() - t0) * 1000.0, 3)
            stages.append(StageTiming(stage=stage, duration_ms=ms, ok=ok, detail=detail))

        from mvs.services.stt import TranscribeReply, TranscribeRequest

        t0 = time.perf_counter()
        heard = await self.client.call(
            "STTService", "transcribe",
            TranscribeRequest(audio=req.audio, format=req.format, sample_rate=req.sample_rate,
                              language=req.language, request_id=request_id,
                              session_id=req.session_id),
            TranscribeReply, timeout=self.timeout_s,
        )  # fmt: skip
        mark("stt", t0, f"{heard.model}: {heard.duration:.2f} s audio")
        if not heard.text.strip():
            raise ValueError("no speech was recognised in the audio")
        lang = heard.language or "en"
        text = heard.text
        if lang != "en":
            t0 = time.perf_counter()
            text = await self._translate(text, lang, "en")
            mark("translate_in", t0, f"{lang}->en")
        emotion = ""
        if self.emotion and req.session_id:
            t0 = time.perf_counter()
            try:
                felt = await self.client.call(
                    "EmotionService", "analyze",
                    AnalyzeRequest(text=text, audio=req.audio, format=req.format,
                                   sample_rate=req.sample_rate, session_id=req.session_id),
                    AnalyzeReply, timeout=5.0,
                )  # fmt: skip
                emotion = felt.emotion
                mark("emotion", t0, f"{felt.emotion} ({felt.tone})")
            except ServiceCallError as exc:  # emotion is an enrichment, never a condition
                mark("emotion", t0, str(exc)[:200], ok=False)
        t0 = time.perf_counter()
        answer = await self.text_handler(TextRequest(
            text=text, session_id=req.session_id, user_id=req.user_id, priority=req.priority,
            max_tokens=req.max_tokens, request_id=request_id,
            metadata={"kind": "audio", "language": lang, "stt_model": heard.model},
        ))  # fmt: skip
        mark("text", t0, answer.route)
        reply_text = answer.text
        if lang != "en" and reply_text.strip():
            t0 = time.perf_counter()
            reply_text = await self._translate(reply_text, "en", lang)
            mark("translate_out", t0, f"en->{lang}")
        audio, rate = None, 0
        if req.speak and reply_text.strip():
            t0 = time.perf_counter()
            spoken = await self.client.call(
                "TTSService", "synthesize",
                SynthesizeRequest(text=reply_text, request_id=request_id,
                                  session_id=req.session_id),
                SynthesizeReply, timeout=self.timeout_s,
            )  # fmt: skip
            audio, rate = spoken.audio, spoken.sample_rate
            mark("tts", t0, f"{spoken.duration:.2f} s audio")
        return AudioReply(
            request_id=request_id, transcript=heard.text, language=lang, text=reply_text,
            route=answer.route, latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
            stages=stages, audio=audio, sample_rate=rate, emotion=emotion,
        )  # fmt: skip


class TranslationStage:
    """Pre stage: a request whose ``metadata.language`` (or detected language) is not English
    is answered in English; :attr:`back` (a post stage) puts the answer into that language."""

    name = "translate"

    def __init__(self, client: ServiceClient, *, timeout_s: float = 10.0) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._languages: dict[str, str] = {}  # request id -> the user's language, in flight
        self.back = _TranslateBack(self)

    async def translate(self, text: str, src: str, tgt: str, session: str | None) -> str:
        reply = await self.client.call(
            "TranslationService", "translate",
            TranslateRequest(text=text, source_lang=src, target_lang=tgt, session_id=session),
            TranslateReply, timeout=self.timeout_s,
        )  # fmt: skip
        return reply.translation

    async def run(self, state: RequestState) -> None:
        meta = state.request.metadata
        lang = meta.get("language") or detect_language(state.text) or "en"
        if lang.lower().startswith("en") or meta.get("kind") == "audio":
            return  # English already, or the voice path translates itself
        try:
            state.text = await self.translate(state.text, lang, "en", state.request.session_id)
        except ServiceCallError:
            if meta.get("language"):
                raise  # the caller said which language: not answering in it is a failure
            return  # a guessed language (maybe wrongly): answer the text as it came
        self._languages[state.request_id] = lang
        while len(self._languages) > 10_000:  # requests that failed before the post stage
            self._languages.pop(next(iter(self._languages)))


class _TranslateBack:
    name = "translate_back"

    def __init__(self, owner: TranslationStage) -> None:
        self.owner = owner

    async def run(self, state: RequestState) -> None:
        lang = self.owner._languages.pop(state.request_id, None)
        if lang and state.answer.strip():
            state.answer = await self.owner.translate(
                state.answer, "en", lang, state.request.session_id
            )


class EmotionStage:
    """Pre stage: the session's emotional state follows each text request, for the sessions
    the ``use_consolidated_emotion`` flag puts on the unified EmotionService."""

    name = "emotion"

    def __init__(
        self, client: ServiceClient, *, flags: FlagStore | None = None, timeout_s: float = 2.0
    ) -> None:
        self.client = client
        self.flags = flags
        self.timeout_s = timeout_s

    async def run(self, state: RequestState) -> None:
        req = state.request
        session = req.session_id
        if self.flags is not None:
            on = self.flags.enabled(FLAG_EMOTION, session or req.user_id)
            state.flags[FLAG_EMOTION] = on
            if not on:
                return
        if not session or req.metadata.get("kind") == "audio":
            return  # the voice path already analysed text and voice together
        try:
            await self.client.call(
                "EmotionService", "analyze", AnalyzeRequest(text=state.text, session_id=session),
                AnalyzeReply, timeout=self.timeout_s,
            )  # fmt: skip
        except ServiceCallError:
            return  # an enrichment: a missing EmotionService never fails a request


def install(pipeline: Pipeline, client: ServiceClient) -> None:
    """Add the translation and emotion stages to a text pipeline (once)."""
    if any(s.name == TranslationStage.name for s in pipeline.pre_stages):
        return
    translation = TranslationStage(client)
    pipeline.pre_stages.extend([translation, EmotionStage(client, flags=pipeline.flags)])
    pipeline.post_stages.append(translation.back)
