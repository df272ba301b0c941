"""Feature flags: a fraction per flag in a JetStream KV bucket, sticky per session or user.

The plan's flags (``use_mvs_routing``, ``use_unified_memory``, ``use_consolidated_emotion``)
say what share of traffic takes the new path. The value of a flag lives in the KV bucket
``mvs_flags`` (key = flag name, value = a MessagePack :class:`FlagValue`); every change is also
a ``flag.set.v1`` event on the log, so the history is replayable and auditable.

Every service process holds one :class:`FlagStore` that watches the bucket: a change made by
``mvs flags set`` reaches every process as soon as the KV message is delivered (milliseconds;
the requirement is under a second), with no polling.

Stickiness: :meth:`FlagStore.enabled` hashes ``"<flag>:<session or user id>"`` with SHA-256 to
a point in [0, 1) and compares it to the fraction. The same id always gets the same answer
for a given fraction, and raising the fraction only adds ids (nobody flips back and forth
while a rollout grows).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from mvs.errors import BusError, ConfigError
from mvs.logs import get_logger
from mvs.metrics import FLAG_DECISIONS, FLAG_FRACTION
from mvs.publisher import EventPublisher
from mvs.tasks import cancel_and_wait
from streams.events.system import FeatureFlagSet

__all__ = ["FLAGS_BUCKET", "FlagStore", "FlagValue", "bucket_point"]

FLAGS_BUCKET = "mvs_flags"
_BUCKET_STREAM = f"KV_{FLAGS_BUCKET}"  # JetStream's names for a KV bucket's stream and keys
_KEY_PREFIX = f"$KV.{FLAGS_BUCKET}."
log = get_logger("flags")


class FlagValue(msgspec.Struct, frozen=True, kw_only=True):
    fraction: float
    updated_at: float
    actor: str = ""


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(FlagValue)


def bucket_point(flag: str, key: str) -> float:
    """Where ``key`` falls in [0, 1) for ``flag``: stable across processes and restarts."""
    digest = hashlib.sha256(f"{flag}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class FlagStore:
    """Read, set and watch feature flags. Create with :meth:`open`; :meth:`stop` when done.

    ``known`` restricts the flag names (a typo in ``mvs flags set`` is an error naming the
    known flags); ``defaults`` seeds flags that the bucket does not hold yet.
    """

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        *,
        events: EventPublisher | None,
        known: tuple[str, ...],
    ) -> None:
        self._js = js
        self._kv = kv
        self._events = events
        self.known = known
        self._values: dict[str, FlagValue] = {}
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        events: EventPublisher | None = None,
        defaults: dict[str, float] | None = None,
        watch: bool = True,
    ) -> FlagStore:
        defaults = defaults or {}
        try:
            try:
                kv = await js.key_value(FLAGS_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=FLAGS_BUCKET,
                        description="MVS feature flag fractions",
                        history=16,
                        storage=StorageType.FILE,
                    )
                )
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise BusError(f"cannot open the {FLAGS_BUCKET} KV bucket: {exc!r}") from exc
        store = cls(js, kv, events=events, known=tuple(defaults))
        for name, fraction in defaults.items():
            value = FlagValue(fraction=fraction, updated_at=time.time(), actor="config-default")
            # create() only writes a key that does not exist: defaults never undo an operator's set
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await kv.create(name, _enc.encode(value))
        await store._load()
        if watch:
            await store._start_watch()
        return store

    async def _load(self) -> None:
        """Read every flag's current value.

        The keys come from the bucket's stream state, not from ``kv.keys()``: that one runs a
        watcher whose end marker nats-py queues *before* the values when the server's
        consumer-info reply overtakes the deliveries (seen on a loaded CI machine), so it can
        read a full bucket as empty; and every call leaves an ephemeral consumer behind for
        5 minutes. A deleted or purged key has no current value and is skipped.
        """
        try:
            info = await self._js.stream_info(_BUCKET_STREAM, subjects_filter=f"{_KEY_PREFIX}>")
            for subject in sorted(info.state.subjects or {}):
                key = subject.removeprefix(_KEY_PREFIX)
                try:
                    entry = await self._kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    continue
                self._apply(key, entry.value)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise BusError(f"cannot read the {FLAGS_BUCKET} KV bucket: {exc!r}") from exc

    def _apply(self, key: str, raw: bytes | None) -> None:
        if raw is None:
            self._values.pop(key, None)
            return
        try:
            value = _dec.decode(raw)
        except msgspec.DecodeError:
            log.warning("ignoring an undecodable flag value", extra={"flag": key})
            return
        self._values[key] = value
        FLAG_FRACTION.labels(key).set(value.fraction)

    async def _start_watch(self) -> None:
        self._watcher = await self._kv.watchall()
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="mvs-flags")

    async def _watch(self) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is None:  # the end-of-initial-values marker
                continue
            if entry.operation in ("DEL", "PURGE"):
                self._apply(entry.key, None)
            else:
                self._apply(entry.key, entry.value)
            async with self._changed:
                self._changed.notify_all()

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
            self._watcher = None
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def fraction(self, name: str) -> float:
        """The current fraction of ``name`` (0.0 for a flag that was never set)."""
        value = self._values.get(name)
        return value.fraction if value else 0.0

    def enabled(self, name: str, key: str | None) -> bool:
        """Whether ``name`` is on for this session/user id; ``None`` (anonymous) means off
        unless the flag is fully on."""
        fraction = self.fraction(name)
        on = fraction >= 1.0 if key is None else bucket_point(name, key) < fraction
        FLAG_DECISIONS.labels(name, "true" if on else "false").inc()
        return on

    def snapshot(self) -> dict[str, FlagValue]:
        return dict(self._values)

    async def set(self, name: str, fraction: float, *, actor: str = "") -> FlagValue:
        """Store a new fraction and record a ``flag.set.v1`` event with the previous one."""
        if self.known and name not in self.known:
            raise ConfigError(
                f"unknown feature flag {name!r}; known flags: {', '.join(sorted(self.known))}"
            )
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"flag fraction must be between 0 and 1, got {fraction}")
        previous = self._values.get(name)
        value = FlagValue(fraction=fraction, updated_at=time.time(), actor=actor)
        try:
            await self._kv.put(name, _enc.encode(value))
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise BusError(f"cannot store flag {name}: {exc!r}") from exc
        self._values[name] = value
        FLAG_FRACTION.labels(name).set(fraction)
        if self._events is not None:
            await self._events.publish(
                FeatureFlagSet(
                    name=name,
                    fraction=fraction,
                    previous=previous.fraction if previous else None,
                    actor=actor,
                    source="flags",
                )
            )
        return value

    async def wait_for(self, name: str, fraction: float, timeout: float = 1.0) -> bool:
        """Wait until this store sees ``name`` at ``fraction`` (used by tests and `mvs flags`)."""

        async def seen() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.fraction(name) == fraction)

        try:
            await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            return False
        return True
