"""STTService: speech to text with Whisper (faster-whisper) from the shared model pool.

Endpoint ``transcribe`` (:class:`TranscribeRequest` -> :class:`TranscribeReply`): ``audio`` is a
WAV file or raw PCM16 (``format: "pcm16"`` plus ``sample_rate``), base64 in JSON or raw bytes
in MessagePack. ``language`` picks the model: English (or none) goes to ``base_stt`` (Whisper
tiny.en); any other Whisper language to ``stt_multilingual`` (Whisper base) when its packages
are installed. Each transcript is a ``speech.transcribed.v1`` event.

The multilingual model's ``model.bin`` is split over two packages; it is joined once into
``$MVS_HOME/models/whisper-base`` (in a worker thread, at start) and registered with the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import msgspec

from mvs.errors import ModelError
from mvs.models.audio import AudioFormat, decode_audio
from mvs.models.backends import ModelSpec
from mvs.models.shared import POOL_KEY, shared_pool
from mvs.models.whisper import WhisperModel, join_split_model, whisper_languages
from mvs.rpc import ServiceClient
from mvs.service import Service, ServiceContext, current_call, endpoint
from mvs.services.voice import AudioReply, AudioRequest, VoicePipeline
from streams.events.language import SpeechTranscribed

__all__ = [
    "ENGLISH_MODEL",
    "MULTILINGUAL_MODEL",
    "STTService",
    "TranscribeReply",
    "TranscribeRequest",
]

ENGLISH_MODEL = "base_stt"
MULTILINGUAL_MODEL = "stt_multilingual"


class TranscribeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    audio: bytes
    format: AudioFormat = "wav"
    sample_rate: int = 16000
    language: str | None = None
    request_id: str | None = None
    session_id: str | None = None
    beam_size: int = 1
    model: str | None = None  # force base_stt or stt_multilingual (default: by language)


class TranscribeReply(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    text: str
    language: str
    duration: float  # seconds of audio
    model: str
    model_ms: float
    language_probability: float = 0.0
    avg_logprob: float = 0.0


class STTService(Service):
    """Whisper speech-to-text over the shared model pool."""

    name = "STTService"

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        models_dir: Path | None = None,
        warm: bool = True,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        settings = ctx.extras.get("settings")
        self.models_dir = models_dir or (settings.home / "models" if settings else None)
        self.warm = warm
        self.multilingual = ""  # why not, if it is unavailable; "" once registered
        self._owned = False

    async def on_start(self) -> None:
        self.pool, self._owned = shared_pool(self.ctx, source=self.name)
        if self._owned:
            self.spawn(self.pool.run_reaper(10.0), name="STTService-reaper")
        self.multilingual = "not prepared yet"
        self.spawn(self._prepare_multilingual(), name="STTService-multilingual")
        if self.warm:
            self.spawn(self._warm(), name="STTService-warm")

    async def _warm(self) -> None:
        with contextlib.suppress(ModelError):  # a failed load is already a model event
            await self.pool.load(ENGLISH_MODEL)

    async def _prepare_multilingual(self) -> None:
        if self.models_dir is None:
            self.multilingual = "no models folder (MVS_HOME) to join Whisper base into"
            return
        try:
            folder = await asyncio.to_thread(join_split_model, self.models_dir / "whisper-base")
        except (ModelError, OSError) as exc:
            self.multilingual = f"unavailable: {exc}"
            self.log.warning("multilingual STT unavailable", extra={"error": str(exc)})
            return
        spec = ModelSpec(model_id=MULTILINGUAL_MODEL, kind="stt", backend="faster_whisper",
                         path=str(folder), memory_mb=200.0, options={"multilingual": True})
        self.pool.specs.setdefault(spec.model_id, spec)
        self.multilingual = ""

    async def on_stop(self) -> None:
        if self._owned:
            await self.pool.close()
            self.ctx.extras.pop(POOL_KEY, None)

    async def check_health(self) -> dict[str, str]:
        return {"base_stt": "ok" if ENGLISH_MODEL in self.pool.specs else "no spec"}

    def _model_for(self, language: str | None, model: str | None) -> tuple[str, str | None]:
        lang = (language or "").strip().lower() or None
        if model not in (None, ENGLISH_MODEL, MULTILINGUAL_MODEL):
            raise LookupError(
                f"unknown STT model {model!r} (known: {ENGLISH_MODEL}, {MULTILINGUAL_MODEL})"
            )
        if lang is not None and lang not in whisper_languages():
            raise ValueError(f"unknown language {language!r}: give a Whisper code like en, pt, de")
        if model != MULTILINGUAL_MODEL and lang in (None, "en"):
            return ENGLISH_MODEL, "en"
        if model == ENGLISH_MODEL:
            raise ValueError(f"{ENGLISH_MODEL} is English-only; asked for language {lang!r}")
        if self.multilingual:
            raise ValueError(
                f"language {lang!r} needs the multilingual Whisper model, which is "
                f"{self.multilingual}; only 'en' is available"
            )
        return MULTILINGUAL_MODEL, lang

    @endpoint("transcribe", request=TranscribeRequest, reply=TranscribeReply, concurrency=2)
    async def transcribe(self, req: TranscribeRequest) -> TranscribeReply:
        if not 1 <= req.beam_size <= 5:
            raise ValueError(f"beam_size must be 1..5, got {req.beam_size}")
        model_id, language = self._model_for(req.language, req.model)
        audio = decode_audio(req.audio, fmt=req.format, sample_rate=req.sample_rate)
        async with self.pool.use(model_id) as model:
            if not isinstance(model, WhisperModel):
                raise ModelError(f"model {model_id!r} is not a Whisper model")
            found = await asyncio.to_thread(
                model.transcribe, audio, language=language, beam_size=req.beam_size
            )
        call = current_call()
        request_id = req.request_id or f"stt-{uuid.uuid4().hex[:16]}"
        self.ctx.events.emit(
            SpeechTranscribed(
                request_id=request_id,
                text=found.text,
                language=found.language,
                audio_s=found.audio_s,
                model=model_id,
                duration_ms=found.model_ms,
                source=self.name,
                correlation_id=call.correlation_id if call else None,
            )
        )
        return TranscribeReply(
            request_id=request_id,
            text=found.text,
            language=found.language,
            duration=found.audio_s,
            model=model_id,
            model_ms=found.model_ms,
            language_probability=round(found.language_probability, 4),
            avg_logprob=found.avg_logprob,
        )

    @endpoint("converse", request=AudioRequest, reply=AudioReply, concurrency=4)
    async def converse(self, req: AudioRequest) -> AudioReply:
        """The whole voice path (:class:`~mvs.services.voice.VoicePipeline`) for one utterance,
        until RequestCoordinator serves it as its ``audio`` endpoint."""
        return await VoicePipeline(ServiceClient(self.ctx.nc)).handle(req)
