"""EmotionService: lexicon sentiment, prosody tone, mood moving average, legacy actions, events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from logread import stored_events

from mvs.errors import ServiceCallError
from mvs.models.audio import Audio, decode_audio, encode_wav
from mvs.models.emotion import default_lexicon, prosody, tone_of
from mvs.rpc import ServiceClient
from mvs.service import ServiceContext
from mvs.services.emotion import (
    AnalyzeReply,
    AnalyzeRequest,
    EmotionalCues,
    EmotionalState,
    EmotionService,
    MoodTracker,
    SessionRef,
    UpdateRequest,
)
from projections.host import ProjectionHost
from streams.definitions import apply_streams
from streams.events.language import EmotionStateUpdated

NAME = "EmotionService"


def voice_like(pitch: float, *, seconds: float = 2.0, loud: float = 0.3, rate: float = 16000,
               syllables_per_s: float = 4.0) -> Audio:
    """A harmonic tone at ``pitch`` whose loudness pulses like syllables."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 5))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * syllables_per_s * t))
    return Audio((loud * wave * envelope / 2.1).astype(np.float32), int(rate))


def test_lexicon_scores_polarity_negation_and_intensity() -> None:
    lex = default_lexicon()
    happy = lex.score("I love this, thank you so much!")
    assert happy.sentiment > 0.3 and happy.emotion in ("joy", "gratitude")
    angry = lex.score("This is NOT working again, I hate it!!")
    assert angry.sentiment < -0.3 and angry.emotion in ("anger", "frustration")
    assert lex.score("I am happy").sentiment > 0 > lex.score("I am not happy").sentiment
    assert lex.score("not bad at all").sentiment > 0
    assert lex.score("it is very good").sentiment > lex.score("it is good").sentiment
    flat = lex.score("The meeting is at three in room four.")
    assert flat.sentiment == 0.0 and flat.emotion == "neutral" and not flat.matched
    assert lex.score("I don't understand what you mean").emotion == "confusion"
    shouted = lex.score("THIS IS BROKEN!!!")
    assert shouted.intensity > lex.score("this is broken").intensity


def test_prosody_measures_pitch_loudness_and_rate() -> None:
    low = prosody(voice_like(110.0))
    high = prosody(voice_like(220.0))
    assert abs(low.pitch_hz - 110.0) < 8 and abs(high.pitch_hz - 220.0) < 15
    quiet = prosody(voice_like(150.0, loud=0.03))
    loud = prosody(voice_like(150.0, loud=0.6))
    assert loud.energy_db > quiet.energy_db + 20
    fast = prosody(voice_like(150.0, syllables_per_s=7.0))
    slow = prosody(voice_like(150.0, syllables_per_s=2.0))
    assert fast.rate_per_s > slow.rate_per_s
    assert prosody(voice_like(150.0), words=6).rate_per_s > 0
    # relative to a speaker's own loud baseline, loud speech is not arousal
    assert tone_of(None, quiet, baseline=loud) in ("calm", "subdued")
    assert tone_of(None, loud, baseline=quiet) in ("excited", "agitated")


def test_mood_is_a_moving_average_and_attention_follows_negative_runs() -> None:
    tracker = MoodTracker(alpha=0.5)
    s1 = tracker.update("s", EmotionalCues(tone="neutral", sentiment=0.8, intensity=0.4), now=1)
    assert s1.emotion == "happy" and s1.mood_sentiment == 0.8 and not s1.attention
    s2 = tracker.update("s", EmotionalCues(tone="angry", sentiment=-0.8, intensity=0.9), now=2)
    assert s2.emotion == "angry" and s2.mood_sentiment == pytest.approx(0.0)
    assert s2.empathy["style"] == "calm"
    for _ in range(2):
        s3 = tracker.update("s", EmotionalCues(tone="sad", sentiment=-0.5, intensity=0.3), now=3)
    assert s3.attention and s3.updates == 4 and "another way" in s3.empathy["hint"]
    assert tracker.get("other").updates == 0 and tracker.get("other").emotion == "neutral"
    with pytest.raises(ValueError, match="sentiment"):
        tracker.update("s", EmotionalCues(sentiment=3.0), now=4)
    with pytest.raises(ValueError, match="unknown tone"):
        tracker.update("s", EmotionalCues(tone="purple"), now=4)


def test_emotion_service_updates_analyzes_records_and_survives_bad_input(
    nats_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        svc = EmotionService(ctx)
        await svc.start()
        client = ServiceClient(ctx.nc, timeout=10)
        try:
            cues = EmotionalCues(tone="angry", sentiment=-0.7, intensity=0.8)
            state = await client.call(NAME, "update_emotional_state",
                                      UpdateRequest(session_id="s1", emotional_cues=cues),
                                      EmotionalState)
            assert state.emotion == "angry" and state.updates == 1
            got = await client.call(NAME, "get_emotional_state", SessionRef(session_id="s1"),
                                    EmotionalState)
            assert got == state

            wav = encode_wav(voice_like(160.0).samples, 16000)
            reply = await client.call(
                NAME, "analyze",
                AnalyzeRequest(text="Thank you, that is wonderful!", audio=wav, session_id="s1"),
                AnalyzeReply,
            )
            assert reply.sentiment > 0.3 and reply.prosody is not None
            assert abs(reply.prosody["pitch_hz"] - 160.0) < 12
            assert reply.state is not None and reply.state.updates == 2
            assert -0.7 < reply.state.mood_sentiment < reply.sentiment

            # the legacy wire shape, as the legacy EmotionEngine took it (extra fields too)
            raw = await ctx.nc.request(
                "mvs.svc.EmotionService.legacy",
                b'{"action": "update_emotional_state", "session_id": "s2", "request_id": "x",'
                b' "emotional_cues": {"tone": "happy", "sentiment": 0.6, "intensity": 0.7}}',
            )
            body: dict[str, Any] = msgspec.json.decode(raw.data)
            assert body["status"] == "success"
            assert body["emotional_state"]["emotion"] == "excited"
            bad = msgspec.json.decode((await ctx.nc.request(
                "mvs.svc.EmotionService.legacy", b'{"action": "dance"}')).data)
            assert bad["status"] == "error" and "unknown action" in bad["error"]

            for request, needle in (
                (AnalyzeRequest(audio=b"not a wav file at all"), "not a WAV"),
                (AnalyzeRequest(), "needs text, audio"),
                (UpdateRequest(session_id="s1",
                               emotional_cues=EmotionalCues(intensity=2.0)), "intensity"),
            ):
                action = "analyze" if isinstance(request, AnalyzeRequest) else (
                    "update_emotional_state")
                with pytest.raises(ServiceCallError) as info:
                    await client.call(NAME, action, request, AnalyzeReply)
                assert info.value.code == "400" and needle in str(info.value)
            still = await client.call(NAME, "analyze", AnalyzeRequest(text="ok good"),
                                      AnalyzeReply)
            assert still.sentiment > 0

            await ctx.events.flush()
            events = await stored_events(ctx.js, "mvs.evt.emotion.>")
            updates = [e for e in events if isinstance(e, EmotionStateUpdated)]
            assert [e.session_id for e in updates] == ["s1", "s1", "s2"]
            assert updates[1].cues["prosody"]["pitch_hz"] > 0
            before = await client.call(NAME, "get_emotional_state", SessionRef(session_id="s1"),
                                       EmotionalState)
        finally:
            await svc.stop()

        # a restarted service continues each session from the emotion_states projection
        host = ProjectionHost(ctx.nc, tmp_path / "mvs.duckdb", url=nats_url)
        await host.start()
        again = EmotionService(ctx)
        await again.start()
        try:
            await host.catch_up()
            restored = await client.call(NAME, "get_emotional_state",
                                         SessionRef(session_id="s1"), EmotionalState)
            assert restored.updates == 2 and restored.emotion == before.emotion
            assert restored.mood_sentiment == pytest.approx(before.mood_sentiment)
            cues = EmotionalCues(tone="neutral", sentiment=0.0, intensity=0.2)
            after = await client.call(NAME, "update_emotional_state",
                                      UpdateRequest(session_id="s1", emotional_cues=cues),
                                      EmotionalState)
            assert after.updates == 3
            assert after.mood_sentiment == pytest.approx(0.7 * before.mood_sentiment, abs=1e-3)
        finally:
            await again.stop()
            await host.stop()
            await ctx.close()

    asyncio.run(main())


def test_voice_only_analysis_uses_the_sessions_voice_profile(nats_url: str) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        svc = EmotionService(ctx)
        await svc.start()
        client = ServiceClient(ctx.nc, timeout=10)
        try:
            quiet = encode_wav(voice_like(120.0, loud=0.02, syllables_per_s=2.5).samples, 16000)
            for _ in range(3):
                await client.call(NAME, "analyze", AnalyzeRequest(audio=quiet, session_id="v"),
                                  AnalyzeReply)
            loud = encode_wav(voice_like(120.0, loud=0.7, syllables_per_s=6.0).samples, 16000)
            reply = await client.call(NAME, "analyze", AnalyzeRequest(audio=loud, session_id="v"),
                                      AnalyzeReply)
            assert reply.tone in ("excited", "agitated") and reply.intensity >= 0.7
            assert decode_audio(loud).seconds == pytest.approx(2.0)
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())
