"""TTSService: text to speech with a Piper voice from the shared model pool.

Endpoint ``synthesize`` (:class:`SynthesizeRequest` -> :class:`SynthesizeReply`): the reply's
``audio`` is a mono PCM16 WAV file at the voice's rate (22.05 kHz for ``base_tts``, the
``en_US-joe-medium`` voice), raw bytes in MessagePack, base64 in JSON. Each synthesis is a
``speech.synthesized.v1`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import msgspec

from mvs.errors import ModelError
from mvs.models.piper import PiperVoiceModel
from mvs.models.shared import POOL_KEY, shared_pool
from mvs.service import Service, ServiceContext, current_call, endpoint
from streams.events.language import SpeechSynthesized

__all__ = ["MAX_CHARS", "VOICE_MODEL", "SynthesizeReply", "SynthesizeRequest", "TTSService"]

VOICE_MODEL = "base_tts"
MAX_CHARS = 4000


class SynthesizeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: str
    voice: str = VOICE_MODEL
    length_scale: float | None = None  # >1 speaks slower, <1 faster
    request_id: str | None = None
    session_id: str | None = None


class SynthesizeReply(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    audio: bytes
    sample_rate: int
    duration: float  # seconds of audio
    voice: str
    model_ms: float


class TTSService(Service):
    """Piper text-to-speech over the shared model pool."""

    name = "TTSService"

    def __init__(
        self, ctx: ServiceContext, *, warm: bool = True, heartbeat_s: float | None = None
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        self.warm = warm
        self._owned = False

    async def on_start(self) -> None:
        self.pool, self._owned = shared_pool(self.ctx, source=self.name)
        if self._owned:
            self.spawn(self.pool.run_reaper(10.0), name="TTSService-reaper")
        if self.warm:
            self.spawn(self._warm(), name="TTSService-warm")

    async def _warm(self) -> None:
        with contextlib.suppress(ModelError):  # a failed load is already a model event
            await self.pool.load(VOICE_MODEL)

    async def on_stop(self) -> None:
        if self._owned:
            await self.pool.close()
            self.ctx.extras.pop(POOL_KEY, None)

    async def check_health(self) -> dict[str, str]:
        return {"base_tts": "ok" if VOICE_MODEL in self.pool.specs else "no spec"}

    @endpoint("synthesize", request=SynthesizeRequest, reply=SynthesizeReply, concurrency=2)
    async def synthesize(self, req: SynthesizeRequest) -> SynthesizeReply:
        text = " ".join(req.text.split())
        if not text:
            raise ValueError("text must not be empty")
        if len(text) > MAX_CHARS:
            raise ValueError(f"text is {len(text)} characters; the limit is {MAX_CHARS}")
        if req.length_scale is not None and not 0.25 <= req.length_scale <= 4.0:
            raise ValueError(f"length_scale must be 0.25..4, got {req.length_scale}")
        spec = self.pool.specs.get(req.voice)
        if spec is None or spec.kind != "tts":
            voices = sorted(m for m, s in self.pool.specs.items() if s.kind == "tts")
            raise LookupError(f"unknown voice {req.voice!r} (known: {', '.join(voices)})")
        async with self.pool.use(req.voice) as model:
            if not isinstance(model, PiperVoiceModel):
                raise ModelError(f"model {req.voice!r} is not a Piper voice")
            speech = await asyncio.to_thread(
                model.synthesize, text, length_scale=req.length_scale
            )
        call = current_call()
        request_id = req.request_id or f"tts-{uuid.uuid4().hex[:16]}"
        self.ctx.events.emit(
            SpeechSynthesized(
                request_id=request_id,
                chars=len(text),
                audio_s=speech.audio_s,
                voice=req.voice,
                duration_ms=speech.model_ms,
                source=self.name,
                correlation_id=call.correlation_id if call else None,
            )
        )
        return SynthesizeReply(
            request_id=request_id,
            audio=speech.wav,
            sample_rate=speech.sample_rate,
            duration=speech.audio_s,
            voice=req.voice,
            model_ms=speech.model_ms,
        )
