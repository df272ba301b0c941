"""LearningOrchestrator: opportunities from the event log, cycles, evaluation, parameters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from logread import stored_events

from mvs.errors import ServiceCallError
from mvs.rpc import Empty, ServiceClient
from mvs.service import ServiceContext
from mvs.services.learning import (
    CycleReply,
    CycleRequest,
    FeedbackReply,
    FeedbackRequest,
    LearningOrchestrator,
    OpportunityDetector,
    OpportunityList,
    ParameterList,
)
from projections.host import ProjectionHost
from projections.query import from_ipc
from streams.base import Event
from streams.definitions import apply_streams
from streams.events.language import (
    LearningOpportunityDetected,
    ModelEvaluated,
    ParameterAdjusted,
    SpeechTranscribed,
    TrainingCycleRecorded,
)
from streams.events.requests import RequestCompleted, RequestReceived, RequestRouted

NAME = "LearningOrchestrator"


def conversation() -> list[Event]:
    """A session with a too-short answer, a correction, a fallback, a failure, a silent clip."""
    return [
        RequestReceived(request_id="r1", session_id="s1", source="RequestCoordinator",
                        text="What is the capital of France and why is it there?"),
        RequestRouted(request_id="r1", task_type="simple_qa", route="local_model"),
        RequestCompleted(request_id="r1", outcome="ok", route="local_model", latency_ms=200,
                         reply_text="Paris."),
        RequestReceived(request_id="r2", session_id="s1", text="No, I meant the capital of Spain"),
        RequestRouted(request_id="r2", task_type="complex_reasoning", route="local_model",
                      fallback_from="cloud_api", reason="cloud_api: circuit open"),
        RequestCompleted(request_id="r2", outcome="ok", route="local_model", latency_ms=400,
                         reply_text="The capital of Spain is Madrid."),
        RequestReceived(request_id="r3", session_id="s2", text="Tell me a story"),
        RequestCompleted(request_id="r3", outcome="error", latency_ms=100, error="model crashed"),
        SpeechTranscribed(request_id="a1", text="", audio_s=2.5, model="base_stt"),
        SpeechTranscribed(request_id="a2", text="hello", audio_s=1.0, model="base_stt"),
    ]  # fmt: skip


def test_detector_finds_each_kind_once_with_ids_from_the_source_event() -> None:
    detector = OpportunityDetector()
    events = conversation()
    found = [o for ev in events for o in detector.observe(ev)]
    kinds = [o.opportunity_type for o in found]
    assert kinds == ["short_answer", "user_correction", "fallback", "error", "stt_empty"]
    correction = found[1]
    assert correction.interaction_data["question"].startswith("What is the capital of France")
    assert correction.interaction_data["answer"] == "Paris."
    assert found[3].priority_score > found[0].priority_score
    metrics = detector.window.metrics()
    assert metrics["requests"] == 3 and metrics["error_rate"] == pytest.approx(1 / 3)
    assert metrics["stt_empty_rate"] == 0.5 and metrics["avg_latency_ms"] == pytest.approx(700 / 3)
    again = OpportunityDetector()
    assert [o.opportunity_id for ev in events for o in again.observe(ev)] == [
        o.opportunity_id for o in found
    ]


def test_orchestrator_consumes_the_log_runs_cycles_and_adjusts(
    nats_url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        for ev in conversation():
            await ctx.events.publish(ev)
        svc = LearningOrchestrator(ctx)
        await svc.start()
        client = ServiceClient(ctx.nc, timeout=10)
        try:
            for _ in range(100):
                listed = await client.call(NAME, "opportunities", Empty(), OpportunityList)
                if listed.pending >= 5:
                    break
                await asyncio.sleep(0.1)
            assert [o.opportunity_type for o in listed.opportunities] == [
                "error", "user_correction", "fallback", "stt_empty", "short_answer"]

            fb = await client.call(NAME, "feedback",
                                   FeedbackRequest(rating=-1.0, request_id="r2", comment="meh"),
                                   FeedbackReply)
            assert fb.recorded and fb.opportunity_id
            happy = await client.call(NAME, "feedback", FeedbackRequest(rating=1.0), FeedbackReply)
            assert not happy.recorded
            with pytest.raises(ServiceCallError) as info:
                await client.call(NAME, "feedback", FeedbackRequest(rating=5), FeedbackReply)
            assert info.value.code == "400" and "rating" in str(info.value)

            cycle = await client.call(NAME, "run_cycle", CycleRequest(max_opportunities=10),
                                      CycleReply)
            assert cycle.status == "completed" and len(cycle.opportunities) == 6
            # 1 of 3 requests was a too-short answer, 1 a correction, 1 a fallback, 1 of 2
            # clips was silent: every parameter crosses its threshold and moves one step
            assert cycle.adjusted == {"answer_max_tokens": 128, "memory_min_score": 0.3,
                                      "stt_beam_size": 2, "cloud_timeout_s": 25}
            params = await client.call(NAME, "parameters", Empty(), ParameterList)
            assert {p.name: p.value for p in params.parameters}["answer_max_tokens"] == 128
            empty = await client.call(NAME, "run_cycle", CycleRequest(), CycleReply)
            assert empty.status == "skipped" and empty.cycle_id is None
        finally:
            await svc.stop()

        # a restarted orchestrator resumes after what it acknowledged: nothing is redetected
        again = LearningOrchestrator(ctx)
        await again.start()
        try:
            await asyncio.sleep(2.5)  # idle: fetches time out and the consumer goes on
            assert again.pending == {}
            assert (await again.health()).status == "healthy"
            await ctx.events.publish(RequestCompleted(request_id="r9", outcome="timeout"))
            for _ in range(50):
                if again.pending:
                    break
                await asyncio.sleep(0.1)
            assert [o.opportunity_type for o in again.pending.values()] == ["error"]
        finally:
            await again.stop()

        await ctx.events.flush()
        events = await stored_events(ctx.js, "mvs.evt.learning.>")
        opps = [e for e in events if isinstance(e, LearningOpportunityDetected)]
        assert len([o for o in opps if o.status == "pending"]) == 7
        assert len([o for o in opps if o.status == "processed"]) == 6
        cycles = [e for e in events if isinstance(e, TrainingCycleRecorded)]
        assert [c.status for c in cycles] == ["running", "completed"]
        assert cycles[1].cycle_id == cycle.cycle_id and "adjusted" in cycles[1].training_logs
        assert len([e for e in events if isinstance(e, ParameterAdjusted)]) == 4
        evaluation = next(e for e in events if isinstance(e, ModelEvaluated))
        assert evaluation.cycle_id == cycle.cycle_id and 0 <= (evaluation.trust_score or 0) < 1

        # the learning projection folds it: statuses are the latest per opportunity
        host = ProjectionHost(ctx.nc, tmp_path / "mvs.duckdb", url=nats_url)
        await host.start()
        try:
            await host.catch_up()
            rows = from_ipc(host.query(
                "SELECT status, count(*) AS n FROM learning_opportunities GROUP BY status "
                "ORDER BY status"
            )).to_pylist()
            assert rows == [{"status": "pending", "n": 1}, {"status": "processed", "n": 6}]
            history = from_ipc(host.query(
                "SELECT name, value FROM parameter_history ORDER BY name")).to_pylist()
            assert {"name": "stt_beam_size", "value": 2.0} in history
            metric_rows = from_ipc(host.query(
                "SELECT count(*) AS n FROM metrics WHERE agent = 'LearningOrchestrator'"
            )).to_pylist()
            assert metric_rows[0]["n"] == 7

            # a third instance takes back what the projection remembers
            third = LearningOrchestrator(ctx, consume=False)
            await third.start()
            try:
                assert [o.opportunity_type for o in third.pending.values()] == ["error"]
                assert third.parameters["answer_max_tokens"].value == 128
                assert third.parameters["memory_min_score"].value == pytest.approx(0.3)
            finally:
                await third.stop()
        finally:
            await host.stop()
            await ctx.close()

    asyncio.run(main())


def test_the_consumer_of_an_earlier_version_hands_over_its_position(nats_url: str) -> None:
    """One durable consumer per domain (several filter subjects are slow on the server); the
    two-filter durable of earlier versions gives its position over and is removed."""
    from nats.js.api import AckPolicy, ConsumerConfig

    from mvs.services.learning import CONSUMERS, OLD_CONSUMER

    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        await ctx.js.add_consumer("MVS_EVENTS", ConsumerConfig(
            durable_name=OLD_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
            filter_subjects=["mvs.evt.request.>", "mvs.evt.speech.>"],
        ))  # fmt: skip
        for ev in conversation():  # the earlier version read all of these
            await ctx.events.publish(ev)
        await ctx.events.flush()
        old = await ctx.js.pull_subscribe_bind(durable=OLD_CONSUMER, stream="MVS_EVENTS")
        for msg in await old.fetch(len(conversation()), timeout=5):
            await msg.ack()
        await old.unsubscribe()
        await ctx.nc.flush()
        await ctx.events.publish(RequestCompleted(request_id="r7", outcome="timeout"))
        await ctx.events.publish(SpeechTranscribed(request_id="a7", text="", audio_s=3.0))
        await ctx.events.flush()

        svc = LearningOrchestrator(ctx)
        await svc.start()
        try:
            for _ in range(100):
                if len(svc.pending) >= 2:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # nothing older turns up late
            kinds = sorted(o.opportunity_type for o in svc.pending.values())
            assert kinds == ["error", "stt_empty"]
            infos = {c.name: c.config for c in await ctx.js.consumers_info("MVS_EVENTS")}
            assert OLD_CONSUMER not in infos
            for domain, durable in CONSUMERS.items():
                assert infos[durable].filter_subject == f"mvs.evt.{domain}.>"
                assert not infos[durable].filter_subjects
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())
