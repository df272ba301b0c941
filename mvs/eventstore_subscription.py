"""Following an application's notifications live: an ordered JetStream consumer.

The consumer starts after ``gt`` and delivers what is stored (catch-up) and then what is
appended (live) through one mechanism, in stream order; nats-py recreates it from the next
sequence if a message goes missing. Messages arrive on the runtime's loop and are handed to
the iterating thread through a queue.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Notification, Subscription
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from mvs.eventstore_js import StoredMsg

if TYPE_CHECKING:
    from mvs.eventstore import JetStreamApplicationRecorder

__all__ = ["JetStreamSubscription"]

_STOPPED = None


class JetStreamSubscription(Subscription["JetStreamApplicationRecorder"]):
    """Notifications with ids above ``gt`` (optionally of some topics), then new ones live."""

    def __init__(
        self,
        recorder: JetStreamApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._wanted = frozenset(topics)
        self._queue: queue.Queue[Notification | None] = queue.Queue()
        self._sub: Any = None
        runtime = recorder.runtime
        names = recorder.names

        async def _start() -> Any:
            if gt:
                config = ConsumerConfig(opt_start_seq=gt + 1)
                policy = DeliverPolicy.BY_START_SEQUENCE
            else:
                config, policy = ConsumerConfig(), DeliverPolicy.ALL
            return await runtime.nc.jetstream().subscribe(
                names.wildcard,
                stream=names.stream,
                cb=self._on_msg,
                ordered_consumer=True,
                deliver_policy=policy,
                config=config,
                idle_heartbeat=2.0,
            )

        self._sub = runtime.call(_start(), doing=f"subscribing to {names.stream}")

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        topic = headers.get("Es-Topic", "")
        if self._wanted and topic not in self._wanted:
            return
        stored = StoredMsg(
            seq=msg.metadata.sequence.stream,
            subject=msg.subject,
            data=msg.data,
            headers=headers,
            time="",
        )
        self._queue.put(self._recorder.notification(stored))

    def stop(self) -> None:
        if self._has_been_stopped:
            return
        super().stop()
        self._queue.put(_STOPPED)
        sub, self._sub = self._sub, None
        runtime = self._recorder.runtime
        if sub is not None and not runtime.closed:
            # Best effort: the consumer is ephemeral and the server drops it anyway.
            with contextlib.suppress(Exception):
                runtime.call(sub.unsubscribe(), doing="stopping a subscription", timeout=5.0)

    def __next__(self) -> Notification:
        if self._has_been_stopped:
            raise StopIteration
        item = self._queue.get()
        if item is _STOPPED or self._has_been_stopped:
            raise StopIteration
        return item
