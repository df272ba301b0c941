"""What the LearningOrchestrator learns from: opportunity detection over request and speech
events, the measured window, and the bounded parameters a cycle may move.

Pure logic (no I/O), so the rules can be tested event by event; the service lives in
:mod:`mvs.services.learning`.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec

from streams.base import Event
from streams.events.language import LearningOpportunityDetected, SpeechTranscribed
from streams.events.requests import RequestCompleted, RequestReceived, RequestRouted

__all__ = ["CORRECTION", "PARAMETERS", "PRIORITY", "OpportunityDetector", "ParameterConfig",
           "Window"]

PRIORITY = {"error": 0.9, "user_correction": 0.8, "negative_feedback": 0.7, "fallback": 0.6,
            "stt_empty": 0.5, "short_answer": 0.4}  # fmt: skip
CORRECTION = re.compile(
    r"^\s*(no\b|nope\b|wrong\b|incorrect\b|that'?s (not|wrong|incorrect)|that is (not|wrong)|"
    r"i meant\b|i said\b|not what i (asked|meant|said)|you misunderstood|actually,? i)",
    re.IGNORECASE,
)


class ParameterConfig(msgspec.Struct, kw_only=True):
    """A tunable parameter (the legacy ``parameter_configs`` row) and the metric that moves it."""

    name: str
    value: float
    min_value: float
    max_value: float
    step: float
    metric: str  # the window metric that drives it
    threshold: float  # above it the parameter moves one step
    direction: float = 1.0  # +1 raises the value, -1 lowers it
    description: str = ""


PARAMETERS: tuple[ParameterConfig, ...] = (
    ParameterConfig(name="answer_max_tokens", value=96, min_value=32, max_value=512, step=32,
                    metric="short_answer_rate", threshold=0.2,
                    description="token budget of local answers"),
    ParameterConfig(name="memory_min_score", value=0.35, min_value=0.2, max_value=0.6,
                    step=0.05, metric="correction_rate", threshold=0.1, direction=-1.0,
                    description="similarity a memory needs to become context"),
    ParameterConfig(name="stt_beam_size", value=1, min_value=1, max_value=5, step=1,
                    metric="stt_empty_rate", threshold=0.1, description="Whisper beam width"),
    ParameterConfig(name="cloud_timeout_s", value=20, min_value=5, max_value=60, step=5,
                    metric="fallback_rate", threshold=0.2,
                    description="patience with the cloud route before falling back"),
)  # fmt: skip


@dataclass
class Window:
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    short_answers: int = 0
    corrections: int = 0
    transcripts: int = 0
    empty_transcripts: int = 0
    latency_ms: float = 0.0

    def metrics(self) -> dict[str, float]:
        n = max(self.requests, 1)
        return {
            "requests": float(self.requests),
            "error_rate": self.errors / n,
            "fallback_rate": self.fallbacks / n,
            "short_answer_rate": self.short_answers / n,
            "correction_rate": self.corrections / n,
            "stt_empty_rate": self.empty_transcripts / max(self.transcripts, 1),
            "avg_latency_ms": self.latency_ms / n,
        }


class OpportunityDetector:
    """Turns request and speech events into opportunities; keeps the window counts."""

    def __init__(self, *, max_tracked: int = 5000) -> None:
        self.window = Window()
        self.max_tracked = max_tracked
        self._requests: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        self._last: dict[str, tuple[str, str, str]] = {}  # session -> (request_id, text, reply)

    def opportunity(
        self, ev: Event, kind: str, data: dict[str, Any]
    ) -> LearningOpportunityDetected:
        """An opportunity whose id derives from the event that revealed it."""
        oid = "lo-" + hashlib.sha1(f"{ev.event_id}|{kind}".encode()).hexdigest()[:20]
        return LearningOpportunityDetected(
            event_id=oid, opportunity_id=oid, source_agent=ev.source or "unknown",
            opportunity_type=kind, priority_score=PRIORITY[kind], status="pending",
            created_at=ev.occurred_at, interaction_data=data, correlation_id=ev.correlation_id,
        )  # fmt: skip

    def observe(self, ev: Event) -> list[LearningOpportunityDetected]:
        found: list[LearningOpportunityDetected] = []
        if isinstance(ev, RequestReceived):
            self._requests[ev.request_id] = (ev.session_id, ev.text)
            while len(self._requests) > self.max_tracked:
                self._requests.popitem(last=False)
            last = self._last.get(ev.session_id or "")
            if ev.session_id and last and CORRECTION.search(ev.text):
                self.window.corrections += 1
                found.append(self.opportunity(ev, "user_correction", {
                    "request_id": last[0], "question": last[1], "answer": last[2],
                    "correction": ev.text, "session_id": ev.session_id,
                }))  # fmt: skip
        elif isinstance(ev, RequestRouted) and ev.fallback_from:
            self.window.fallbacks += 1
            found.append(self.opportunity(ev, "fallback", {
                "request_id": ev.request_id, "from": ev.fallback_from, "to": ev.route,
                "reason": ev.reason, "task_type": ev.task_type,
            }))  # fmt: skip
        elif isinstance(ev, RequestCompleted):
            session, text = self._requests.pop(ev.request_id, (None, ""))
            self.window.requests += 1
            self.window.latency_ms += ev.latency_ms
            if ev.outcome != "ok":
                self.window.errors += 1
                found.append(self.opportunity(ev, "error", {
                    "request_id": ev.request_id, "outcome": ev.outcome, "error": ev.error,
                    "route": ev.route, "question": text,
                }))  # fmt: skip
            elif len(text.split()) >= 5 and len(ev.reply_text.split()) < 3 and "?" in text:
                self.window.short_answers += 1
                found.append(self.opportunity(ev, "short_answer", {
                    "request_id": ev.request_id, "question": text, "answer": ev.reply_text,
                }))  # fmt: skip
            if session and ev.outcome == "ok":
                self._last[session] = (ev.request_id, text, ev.reply_text)
        elif isinstance(ev, SpeechTranscribed):
            self.window.transcripts += 1
            if not ev.text.strip() and ev.audio_s >= 1.0:
                self.window.empty_transcripts += 1
                found.append(self.opportunity(ev, "stt_empty", {
                    "request_id": ev.request_id, "audio_s": ev.audio_s, "model": ev.model,
                }))  # fmt: skip
        return found
