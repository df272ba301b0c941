"""Speech, emotion, translation and learning: the voice-assistant side of the log."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from streams.base import Event


class SpeechTranscribed(Event, frozen=True, kw_only=True, tag="speech.transcribed.v1"):
    domain: ClassVar[str] = "speech"
    key_field: ClassVar[str | None] = "request_id"

    request_id: str
    text: str
    language: str = "en"
    audio_s: float = 0.0
    model: str = ""
    duration_ms: float = 0.0


class SpeechSynthesized(Event, frozen=True, kw_only=True, tag="speech.synthesized.v1"):
    domain: ClassVar[str] = "speech"
    key_field: ClassVar[str | None] = "request_id"

    request_id: str
    chars: int
    audio_s: float = 0.0
    voice: str = ""
    duration_ms: float = 0.0


class EmotionStateUpdated(Event, frozen=True, kw_only=True, tag="emotion.updated.v1"):
    domain: ClassVar[str] = "emotion"
    key_field: ClassVar[str | None] = "session_id"

    session_id: str
    emotion: str = "neutral"
    tone: str = "neutral"
    sentiment: float = 0.0
    intensity: float = 0.0
    cues: dict[str, Any] = msgspec.field(default_factory=dict)


class TranslationRecorded(Event, frozen=True, kw_only=True, tag="translation.recorded.v1"):
    """A translation made or imported; ``cache_key`` identifies (text, source, target)."""

    domain: ClassVar[str] = "translation"
    key_field: ClassVar[str | None] = "cache_key"

    cache_key: str
    text: str
    source_lang: str
    target_lang: str
    translation: str
    engine: str
    translated_at: float | None = None
    duration_ms: float | None = None


class LearningOpportunityDetected(
    Event, frozen=True, kw_only=True, tag="learning.opportunity.v1"
):
    domain: ClassVar[str] = "learning"
    key_field: ClassVar[str | None] = "opportunity_id"

    opportunity_id: str
    source_agent: str = ""
    opportunity_type: str = ""
    priority_score: float = 0.0
    status: str = "pending"
    created_at: float | None = None
    interaction_data: dict[str, Any] = msgspec.field(default_factory=dict)


class TrainingCycleRecorded(Event, frozen=True, kw_only=True, tag="learning.training_cycle.v1"):
    domain: ClassVar[str] = "learning"
    key_field: ClassVar[str | None] = "cycle_id"

    cycle_id: str
    model_name: str
    status: str = ""
    start_time: float | None = None
    end_time: float | None = None
    opportunities: list[str] = msgspec.field(default_factory=list)
    resource_allocation: dict[str, Any] = msgspec.field(default_factory=dict)
    hyperparameters: dict[str, Any] = msgspec.field(default_factory=dict)
    training_logs: str = ""


class ParameterAdjusted(Event, frozen=True, kw_only=True, tag="learning.parameter.v1"):
    domain: ClassVar[str] = "learning"
    key_field: ClassVar[str | None] = "name"

    name: str
    value: float
    performance_metric: float | None = None
    at: float | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class MetricRecorded(Event, frozen=True, kw_only=True, tag="learning.metric.v1"):
    """A performance metric of an agent or model (learning and observability history)."""

    domain: ClassVar[str] = "metric"
    key_field: ClassVar[str | None] = "agent"

    agent: str
    metric_name: str
    value: float
    at: float | None = None
    host: str = ""
    context: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelEvaluated(Event, frozen=True, kw_only=True, tag="learning.evaluation.v1"):
    domain: ClassVar[str] = "learning"
    key_field: ClassVar[str | None] = "evaluation_id"

    evaluation_id: str
    model_name: str
    cycle_id: str | None = None
    trust_score: float | None = None
    accuracy: float | None = None
    f1_score: float | None = None
    avg_latency_ms: float | None = None
    evaluated_at: float | None = None
    comparison: dict[str, Any] = msgspec.field(default_factory=dict)


EVENTS = (
    SpeechTranscribed,
    SpeechSynthesized,
    EmotionStateUpdated,
    TranslationRecorded,
    LearningOpportunityDetected,
    TrainingCycleRecorded,
    ParameterAdjusted,
    MetricRecorded,
    ModelEvaluated,
)
