"""JetStream stream definitions, applied idempotently at start and by ``mvs streams apply``."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from mvs.errors import BusError
from streams.subjects import DLQ_PREFIX, EVENTS_PREFIX, WORK_PREFIX

__all__ = ["STREAMS", "StreamChange", "apply_streams", "stream_definitions"]

EVENTS_STREAM = "MVS_EVENTS"
WORK_STREAM = "MVS_WORK"
DLQ_STREAM = "MVS_DLQ"

DAY = 86400.0


def stream_definitions(*, duplicate_window_s: float = 120.0) -> tuple[StreamConfig, ...]:
    """The streams MVS needs.

    ``MVS_EVENTS`` is the immutable event log: kept forever, deletes and purges denied,
    atomic batch publish allowed, duplicates dropped by ``Nats-Msg-Id`` inside the window.
    """
    return (
        StreamConfig(
            name=EVENTS_STREAM,
            description="MVS event log: every request, model load and memory write",
            subjects=[f"{EVENTS_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=0,
            duplicate_window=duplicate_window_s,
            deny_delete=True,
            deny_purge=True,
            allow_atomic=True,
            allow_direct=True,
            max_msg_size=8 * 1024 * 1024,
        ),
        StreamConfig(
            name=WORK_STREAM,
            description="AsyncProcessor work queue",
            subjects=[f"{WORK_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=7 * DAY,
            duplicate_window=duplicate_window_s,
        ),
        StreamConfig(
            name=DLQ_STREAM,
            description="Dead letters: work and messages that could not be processed",
            subjects=[f"{DLQ_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=30 * DAY,
            duplicate_window=duplicate_window_s,
            deny_delete=True,
        ),
    )


STREAMS = stream_definitions()

# Fields compared to decide whether a stream needs an update; the rest are server defaults.
_COMPARED = (
    "description",
    "subjects",
    "retention",
    "storage",
    "max_age",
    "duplicate_window",
    "deny_delete",
    "deny_purge",
    "allow_atomic",
    "allow_direct",
    "max_msg_size",
)


@dataclass(frozen=True)
class StreamChange:
    name: str
    action: str  # "created", "updated" or "unchanged"
    fields: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        extra = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.name}: {self.action}{extra}"


def _normal(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None:
        return None
    if hasattr(value, "value"):
        return value.value
    return value


def _diff(want: StreamConfig, have: StreamConfig) -> tuple[str, ...]:
    changed = []
    for name in _COMPARED:
        w, h = _normal(getattr(want, name)), _normal(getattr(have, name))
        if w is None:
            continue
        if name in ("allow_atomic", "allow_direct", "deny_delete", "deny_purge"):
            h = bool(h)
        if w != h:
            changed.append(name)
    return tuple(changed)


async def apply_streams(
    js: JetStreamContext, definitions: tuple[StreamConfig, ...] = STREAMS
) -> list[StreamChange]:
    """Create missing streams and update changed ones; report what was done for each."""
    changes = []
    for want in definitions:
        assert want.name is not None
        try:
            info = await js.stream_info(want.name)
        except NotFoundError:
            try:
                await js.add_stream(want)
            except BadRequestError as exc:
                raise BusError(f"cannot create stream {want.name}: {exc.description}") from exc
            changes.append(StreamChange(want.name, "created"))
            continue
        fields = _diff(want, info.config)
        if not fields:
            changes.append(StreamChange(want.name, "unchanged"))
            continue
        try:
            await js.update_stream(want)
        except BadRequestError as exc:
            raise BusError(
                f"cannot update stream {want.name} ({', '.join(fields)}): {exc.description}"
            ) from exc
        changes.append(StreamChange(want.name, "updated", fields))
    return changes
