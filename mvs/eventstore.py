"""An eventsourcing persistence module on NATS JetStream.

Select it with ``PERSISTENCE_MODULE=mvs.eventstore`` and ``MVS_NATS_URL=nats://...`` in an
application's environment. Each application gets a stream ``MVS_ES_<app>`` (created
idempotently, deletes and purges denied, atomic publish and direct get allowed) with one
subject per aggregate (``mvs.es.<app>.events.u.<uuid>``); snapshots go to
``MVS_ES_<app>_snapshots``. Names keep the application's case; other characters than
letters, digits and ``_`` become ``_`` plus a short hash of the name.

- An append of several events is one JetStream atomic batch: all stored or none.
- Each subject's first message in an append carries ``Nats-Expected-Last-Subject-Sequence``,
  so a writer that lost a race is refused by the server and gets ``IntegrityError``; so does
  an append whose versions repeat or (for events) leave a gap after the stored ones.
- Each message carries ``Nats-Msg-Id`` = subject + version: an append retried after a lost
  ack never stores twice; the retry recognises its own events and reports success.
- Notification ids are the stream sequences; ``subscribe`` follows an ordered consumer.

Tracking records (eventsourcing's tracking and process recorders) live in DuckDB, beside
the projections they position (:mod:`mvs.eventstore_tracking`); a process recorder writes its
events to JetStream and its position to DuckDB, not in one transaction (see
:class:`JetStreamProcessRecorder`).

Environment keys (read through eventsourcing's ``Environment``, so ``<APP>_`` prefixed keys
win): ``MVS_NATS_URL`` (required), ``MVS_ES_TIMEOUT`` (seconds, default 10),
``MVS_ES_DUCKDB_PATH`` (tracking records, default
``$MVS_HOME/eventstore/MVS_ES_<app>.duckdb``),
``CREATE_TABLE`` (``no`` skips creating streams and tables). See ``docs/durability.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    Notification,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Tracking,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from mvs.errors import ConfigError
from mvs.eventstore_append import Appender
from mvs.eventstore_js import StoredMsg, direct_get_batch, direct_get_last
from mvs.eventstore_runtime import NatsRuntime, StoreNames
from mvs.eventstore_subscription import JetStreamSubscription
from mvs.eventstore_tracking import DuckDBTrackingRecorder
from mvs.settings import load_settings

__all__ = [
    "DuckDBTrackingRecorder",
    "Factory",
    "JetStreamAggregateRecorder",
    "JetStreamApplicationRecorder",
    "JetStreamProcessRecorder",
    "JetStreamSubscription",
]

_PAGE = 1000  # messages per direct-get request


class JetStreamAggregateRecorder(AggregateRecorder):
    """Stored events of one application and purpose, one JetStream subject per aggregate."""

    def __init__(self, runtime: NatsRuntime, names: StoreNames, *, contiguous: bool) -> None:
        self.runtime = runtime
        self.names = names
        self._appender = Appender(runtime, names, contiguous=contiguous)

    def create_table(self) -> None:
        """Create the stream if missing (an identical existing stream is left alone)."""

        async def _create() -> None:
            await self.runtime.nc.jetstream().add_stream(self.names.stream_config())

        self.runtime.call(_create(), doing=f"creating stream {self.names.stream}")

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._insert(stored_events)
        return None

    def _insert(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        if not stored_events:
            return []
        return self.runtime.call(
            self._appender.append(stored_events),
            doing=f"appending {len(stored_events)} events to {self.names.stream}",
        )

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return self.runtime.call(
            self._select(originator_id, gt=gt, lte=lte, desc=desc, limit=limit),
            doing=f"reading aggregate {originator_id} from {self.names.stream}",
        )

    async def _select(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[StoredEvent]:
        subject = self.names.subject(originator_id)
        rt = self.runtime
        if desc and limit == 1 and lte is None:
            # The latest event or snapshot: one direct get of the subject's last message.
            last = await direct_get_last(
                rt.nc, rt.mux, self.names.stream, subject, timeout=rt.timeout
            )
            if last is None:
                self._appender.remember(subject, None, 0)
                return []
            event = self._stored_event(originator_id, last)
            self._appender.remember(subject, event.originator_version, last.seq)
            return [event] if gt is None or event.originator_version > gt else []
        msgs = await self._read_subject(subject)
        if msgs:
            last_version = int(msgs[-1].headers["Es-Version"])
            self._appender.remember(subject, last_version, msgs[-1].seq)
        else:
            self._appender.remember(subject, None, 0)
        events = [self._stored_event(originator_id, m) for m in msgs]
        events = [
            e
            for e in events
            if (gt is None or e.originator_version > gt)
            and (lte is None or e.originator_version <= lte)
        ]
        if desc:
            events.reverse()
        return events if limit is None else events[:limit]

    async def _read_subject(self, subject: str) -> list[StoredMsg]:
        rt = self.runtime
        out: list[StoredMsg] = []
        seq = 1
        while True:
            msgs, pending = await direct_get_batch(
                rt.nc, rt.mux, self.names.stream, subject,
                start_seq=seq, batch=_PAGE, timeout=rt.timeout,
            )
            out.extend(msgs)
            if not msgs or pending == 0:
                return out
            seq = msgs[-1].seq + 1

    @staticmethod
    def _stored_event(originator_id: UUID | str, msg: StoredMsg) -> StoredEvent:
        return StoredEvent(
            originator_id=originator_id,
            originator_version=int(msg.headers["Es-Version"]),
            topic=msg.headers["Es-Topic"],
            state=msg.data,
        )


class JetStreamApplicationRecorder(JetStreamAggregateRecorder, ApplicationRecorder):
    """Also reads the application sequence: notification id = stream sequence."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self._insert(stored_events)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        first = 1 if start is None else (start if inclusive_of_start else start + 1)
        return self.runtime.call(
            self._notifications(first, limit, stop, frozenset(topics)),
            doing=f"reading notifications from {self.names.stream}",
        )

    async def _notifications(
        self, seq: int, limit: int, stop: int | None, topics: frozenset[str]
    ) -> list[Notification]:
        rt = self.runtime
        out: list[Notification] = []
        while len(out) < limit and (stop is None or seq <= stop):
            want = _PAGE if topics else min(limit - len(out), _PAGE)
            if stop is not None:
                want = min(want, stop - seq + 1)
            msgs, pending = await direct_get_batch(
                rt.nc, rt.mux, self.names.stream, self.names.wildcard,
                start_seq=seq, batch=want, timeout=rt.timeout,
            )
            for msg in msgs:
                if stop is not None and msg.seq > stop:
                    return out
                if topics and msg.headers.get("Es-Topic") not in topics:
                    continue
                out.append(self.notification(msg))
                if len(out) == limit:
                    return out
            if not msgs or pending == 0:
                break
            seq = msgs[-1].seq + 1
        return out

    def notification(self, msg: StoredMsg) -> Notification:
        """A stored message as an eventsourcing notification (id = stream sequence)."""
        return Notification(
            id=msg.seq,
            originator_id=self.names.originator(msg.subject, msg.headers),
            originator_version=int(msg.headers["Es-Version"]),
            topic=msg.headers["Es-Topic"],
            state=msg.data,
        )

    def max_notification_id(self) -> int | None:
        async def _last() -> int:
            info = await self.runtime.nc.jetstream().stream_info(self.names.stream)
            return int(info.state.last_seq)

        last = self.runtime.call(_last(), doing=f"reading the state of {self.names.stream}")
        return last or None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> JetStreamSubscription:
        return JetStreamSubscription(self, gt=gt, topics=topics)


class JetStreamProcessRecorder(JetStreamApplicationRecorder, ProcessRecorder):
    """Events to JetStream, tracking records to DuckDB.

    The two writes are not one transaction: the tracking position is checked first (an
    already processed notification is refused before any event is written), the events
    are appended (atomically, deduplicated by Msg-Id, so a retry after a lost ack stores
    them once), then the position is recorded. A crash between the last two leaves the
    events without their position: after a restart the notification is processed again,
    and a policy that writes the same aggregate versions again gets ``IntegrityError``
    (eventsourcing's runners stop on it), while one that creates new aggregates with
    fresh ids stores them a second time. Policies that must be exactly-once derive their
    aggregate ids from the upstream notification (uuid5), turning the replay into a
    conflict instead of a duplicate.
    """

    def __init__(
        self, runtime: NatsRuntime, names: StoreNames, tracking: DuckDBTrackingRecorder
    ) -> None:
        super().__init__(runtime, names, contiguous=True)
        self.tracking = tracking

    def create_table(self) -> None:
        super().create_table()
        self.tracking.create_table()

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is not None:
            current = self.tracking.max_tracking_id(tracking.application_name)
            if current is not None and current >= tracking.notification_id:
                raise IntegrityError(
                    f"notification {tracking.notification_id} of "
                    f"{tracking.application_name!r} was already processed"
                )
        ids = self._insert(stored_events)
        if tracking is not None:
            self.tracking.insert_tracking(tracking)
        return ids

    def insert_tracking(self, tracking: Tracking) -> None:
        self.tracking.insert_tracking(tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        return self.tracking.max_tracking_id(application_name)


class Factory(InfrastructureFactory[DuckDBTrackingRecorder]):
    """Builds the JetStream recorders of one application over one NATS connection."""

    MVS_NATS_URL = "MVS_NATS_URL"
    MVS_ES_TIMEOUT = "MVS_ES_TIMEOUT"
    MVS_ES_DUCKDB_PATH = "MVS_ES_DUCKDB_PATH"
    CREATE_TABLE = "CREATE_TABLE"

    aggregate_recorder_class = JetStreamAggregateRecorder
    application_recorder_class = JetStreamApplicationRecorder
    tracking_recorder_class = DuckDBTrackingRecorder
    process_recorder_class = JetStreamProcessRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        url = self.env.get(self.MVS_NATS_URL)
        if not url:
            keys = ", ".join(self.env.create_keys(self.MVS_NATS_URL))
            raise ConfigError(f"mvs.eventstore needs the NATS server URL in one of: {keys}")
        timeout_text = self.env.get(self.MVS_ES_TIMEOUT, "10")
        try:
            timeout = float(timeout_text)
        except ValueError as exc:
            raise ConfigError(f"MVS_ES_TIMEOUT must be seconds, got {timeout_text!r}") from exc
        self.runtime = NatsRuntime(url, name=f"mvs-es-{self.app_name}", timeout=timeout)
        self._tracking: list[DuckDBTrackingRecorder] = []

    @property
    def app_name(self) -> str:
        return self.env.name or "default"

    def _create_table(self) -> bool:
        return bool(strtobool(self.env.get(self.CREATE_TABLE, "yes") or "yes"))

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        recorder = self.aggregate_recorder_class(
            self.runtime, StoreNames(self.app_name, purpose), contiguous=purpose == "events"
        )
        if self._create_table():
            recorder.create_table()
        return recorder

    def application_recorder(self) -> ApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.application_recorder_class
        if not (isinstance(cls, type) and issubclass(cls, JetStreamApplicationRecorder)):
            raise ProgrammingError(f"{topic} is not a JetStreamApplicationRecorder")
        recorder = cls(self.runtime, StoreNames(self.app_name), contiguous=True)
        if self._create_table():
            recorder.create_table()
        return recorder

    def tracking_recorder(
        self, tracking_recorder_class: type[DuckDBTrackingRecorder] | None = None
    ) -> DuckDBTrackingRecorder:
        cls = tracking_recorder_class
        if cls is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            cls = resolve_topic(topic) if topic else self.tracking_recorder_class
        if not (isinstance(cls, type) and issubclass(cls, DuckDBTrackingRecorder)):
            raise ProgrammingError(f"{cls!r} is not a DuckDBTrackingRecorder")
        recorder = cls(self.tracking_path())
        self._tracking.append(recorder)
        if self._create_table():
            recorder.create_table()
        return recorder

    def process_recorder(self) -> ProcessRecorder:
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.process_recorder_class
        if not (isinstance(cls, type) and issubclass(cls, JetStreamProcessRecorder)):
            raise ProgrammingError(f"{topic} is not a JetStreamProcessRecorder")
        tracking = DuckDBTrackingRecorder(self.tracking_path())
        self._tracking.append(tracking)
        recorder = cls(self.runtime, StoreNames(self.app_name), tracking)
        if self._create_table():
            recorder.create_table()
        return recorder

    def tracking_path(self) -> str:
        path = self.env.get(self.MVS_ES_DUCKDB_PATH)
        if path:
            return path
        home = load_settings(dict(self.env)).home
        return str(Path(home) / "eventstore" / f"{StoreNames(self.app_name).stream}.duckdb")

    def close(self) -> None:
        for recorder in self._tracking:
            with contextlib.suppress(Exception):  # a recorder closed twice is fine
                recorder.close()
        self._tracking.clear()
        self.runtime.close()
