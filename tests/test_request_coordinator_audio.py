"""RequestCoordinator's voice path: real speech in, through STT and the text pipeline, out.

ModelManagerSuite, STT, TTS, CacheManager, TranslationService and RequestCoordinator run
for the whole module in one background event loop (each model loads once, as in the
``models`` process); the question is spoken by TTSService (piper) and every test is a client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from typing import Any, TypeVar

import msgspec
import pytest
from logread import stored_events
from service_loop import ServiceLoop, running

from mvs.errors import ServiceCallError
from mvs.flags import FlagStore
from mvs.models.audio import decode_audio
from mvs.rpc import ServiceClient
from mvs.services.cache import CacheManager
from mvs.services.model_manager import ModelManagerSuite
from mvs.services.request_coordinator import RequestCoordinator
from mvs.services.request_pipeline import TextReply, TextRequest
from mvs.services.stt import STTService
from mvs.services.translation import TranslationService
from mvs.services.tts import SynthesizeReply, SynthesizeRequest, TTSService
from mvs.services.voice import AudioReply, AudioRequest
from streams.events.requests import RequestCompleted, RequestReceived

R = TypeVar("R", bound=msgspec.Struct)
RC = "RequestCoordinator"
QUESTION = "What is the capital of France?"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class Host(ServiceLoop):
    """The services in a background loop; tests call them over NATS from the main thread."""

    async def start(self) -> None:
        self.ctx = await self.connect()
        # every session on the MVS path, without the emotion stage (EmotionService is not here)
        self.ctx.flags = await FlagStore.open(self.ctx.js, events=self.ctx.events, defaults={
            "use_mvs_routing": 1.0, "use_unified_memory": 0.0, "use_consolidated_emotion": 0.0,
        })  # fmt: skip
        self.rc = RequestCoordinator(self.ctx)
        self.services = [
            ModelManagerSuite(self.ctx),
            STTService(self.ctx, models_dir=self.home / "models", warm=False),
            TTSService(self.ctx, warm=False),
            CacheManager(self.ctx),
            TranslationService(self.ctx, model_dirs=[]),
            self.rc,
        ]
        for svc in self.services:
            await svc.start()
        self.client = ServiceClient(self.ctx.nc, timeout=120)

    async def stop(self) -> None:
        for svc in reversed(self.services):
            await svc.stop()
        assert self.ctx.flags is not None
        await self.ctx.flags.stop()
        await self.ctx.close()

    def call(self, action: str, req: Any, reply: type[R], service: str = RC) -> R:
        return self.run(self.client.call(service, action, req, reply))

    def received(self) -> dict[str, RequestReceived]:
        """The request.received events so far, by request id."""

        async def read() -> dict[str, RequestReceived]:
            await self.ctx.events.flush()
            return {e.request_id: e
                    for e in await stored_events(self.ctx.js, "mvs.evt.request.>")
                    if isinstance(e, RequestReceived)}

        return self.run(read())


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("rc-audio")
    with running(Host, base) as h:
        yield h


@pytest.fixture(scope="module")
def question(host: Host) -> bytes:
    spoken = host.call("synthesize", SynthesizeRequest(text=QUESTION), SynthesizeReply,
                       service="TTSService")  # fmt: skip
    return spoken.audio


def test_spoken_question_reaches_the_pipeline_and_is_answered_in_text_and_speech(
    host: Host, question: bytes
) -> None:
    reply = host.call("audio", AudioRequest(audio=question, max_tokens=16, request_id="a-1"),
                      AudioReply)  # fmt: skip
    assert words(reply.transcript) == words(QUESTION)
    assert reply.request_id == "a-1" and reply.language == "en"
    assert reply.text.strip() and reply.route == "local_model"
    assert [s.stage for s in reply.stages] == ["stt", "text", "tts"]
    assert reply.audio is not None and decode_audio(reply.audio).rate == reply.sample_rate
    # the transcript is what the text pipeline received, recorded as a spoken request
    received = host.received()["a-1"]
    assert received.kind == "audio" and words(received.text) == words(QUESTION)
    assert received.metadata["stt_model"]

    quiet = host.call("audio", AudioRequest(audio=question, max_tokens=16, speak=False),
                      AudioReply)  # fmt: skip
    assert quiet.audio is None and quiet.sample_rate == 0
    assert quiet.route == "cache" and quiet.text == reply.text  # the same words: cached


def test_legacy_audio_request_is_answered_with_the_transcript(
    host: Host, question: bytes
) -> None:
    legacy = {"type": "audio", "audio_data": base64.b64encode(question).decode(),
              "metadata": {"urgency": "high"}, "request_id": "legacy-a-1",
              "source_agent": "x", "timestamp": "2024-01-01T00:00:00"}  # fmt: skip
    raw = host.run(host.ctx.nc.request(f"mvs.svc.{RC}.legacy", json.dumps(legacy).encode(),
                                       timeout=120))  # fmt: skip
    answer = json.loads(raw.data)
    assert answer["status"] == "success" and answer["response"].strip()
    assert words(answer["transcript"]) == words(QUESTION)
    assert host.received()["legacy-a-1"].kind == "audio"
    for bad, problem in (({"type": "audio"}, "audio_data"),
                         ({"type": "audio", "audio_data": "not base64!"}, "base64")):
        raw = host.run(host.ctx.nc.request(f"mvs.svc.{RC}.legacy", json.dumps(bad).encode(),
                                           timeout=10))  # fmt: skip
        answer = json.loads(raw.data)
        assert answer["status"] == "error" and problem in answer["error"]


def test_audio_without_speech_is_a_clear_error_and_typed_text_stays_text(host: Host) -> None:
    silence = bytes(32000)  # one second of PCM16 silence
    with pytest.raises(ServiceCallError) as info:
        host.call("audio", AudioRequest(audio=silence, format="pcm16", speak=False), AudioReply)
    assert info.value.code == "400" and "no speech" in str(info.value)
    typed = host.call("text", TextRequest(text="Say hello.", max_tokens=8, request_id="t-1"),
                      TextReply)  # fmt: skip
    assert typed.text and host.received()["t-1"].kind == "text"


def test_a_translated_request_answered_from_the_cache_comes_back_translated(
    host: Host,
) -> None:
    def ask(request_id: str) -> TextReply:
        req = TextRequest(text="Qual é a cor do céu?", max_tokens=12,
                          request_id=request_id, metadata={"language": "pt"})  # fmt: skip
        return host.call("text", req, TextReply)

    first = ask("pt-1")
    assert not first.cached and "translate_back" in [s.stage for s in first.stages]
    for i in range(100):  # the answer is cached just after the reply
        again = ask(f"pt-again-{i}")
        if again.cached:
            break
        host.run(asyncio.sleep(0.05))
    assert again.route == "cache"
    back = next(s for s in again.stages if s.stage == "translate_back")
    assert back.ok and again.text == first.text  # in Portuguese, as the first answer was

    async def completed() -> RequestCompleted:
        await host.ctx.events.flush()
        found = None
        for event in await stored_events(host.ctx.js, "mvs.evt.request.>"):
            if isinstance(event, RequestCompleted) and event.request_id == again.request_id:
                found = event
        assert found is not None
        return found

    assert host.run(completed()).reply_text == again.text
