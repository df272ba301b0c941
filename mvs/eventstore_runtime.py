"""The event store's NATS side: one background event loop, stream naming, error translation.

eventsourcing's recorders are synchronous and called from any thread, while nats-py is
asyncio. A :class:`NatsRuntime` owns one event-loop thread with one connection; recorder
methods hand it coroutines with ``run_coroutine_threadsafe`` and wait. All recorder state that
coroutines touch (the last-version cache) is only touched on that loop, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import re
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import nats.errors
from eventsourcing.persistence import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)
from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError

from mvs.errors import MvsError
from mvs.eventstore_js import ReplyMux
from mvs.tasks import cancel_and_wait
from streams.subjects import token, untoken

__all__ = ["NatsRuntime", "StoreNames", "translate_error"]

log = logging.getLogger("mvs.eventstore")

T = TypeVar("T")

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _slug(name: str) -> str:
    """A stream-name- and subject-safe form of ``name``; a short hash keeps it unique."""
    clean = _UNSAFE.sub("_", name) or "default"
    if clean != name:
        clean += "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return clean


@dataclass(frozen=True)
class StoreNames:
    """Where one application's recorder of one purpose keeps its events.

    Stream ``MVS_ES_<app>`` (``events``) or ``MVS_ES_<app>_<purpose>`` (e.g. snapshots), with
    subjects ``mvs.es.<app>.<purpose>.u.<uuid>`` or ``...<purpose>.s.<escaped str id>``: one
    subject per aggregate. Each purpose gets its own stream so that notification ids (stream
    sequences) of the events stream are not interleaved with snapshots.
    """

    app: str
    purpose: str = "events"

    @property
    def stream(self) -> str:
        # Names keep their case: "Foo" and "foo" are two applications, two streams.
        base = f"MVS_ES_{_slug(self.app)}"
        return base if self.purpose == "events" else f"{base}_{_slug(self.purpose)}"

    @property
    def prefix(self) -> str:
        return f"mvs.es.{_slug(self.app)}.{_slug(self.purpose)}"

    @property
    def wildcard(self) -> str:
        return f"{self.prefix}.>"

    def subject(self, originator_id: UUID | str) -> str:
        if isinstance(originator_id, UUID):
            return f"{self.prefix}.u.{originator_id}"
        return f"{self.prefix}.s.{token(originator_id)}"

    def originator(self, subject: str, headers: dict[str, str]) -> UUID | str:
        kind, _, tok = subject[len(self.prefix) + 1 :].partition(".")
        if kind == "u":
            return UUID(tok)
        return untoken(tok) or headers.get("Es-Id", "")

    def stream_config(self, *, duplicate_window_s: float = 120.0) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            description=f"eventsourcing {self.purpose} of application {self.app!r} (mvs)",
            subjects=[self.wildcard],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=0,
            duplicate_window=duplicate_window_s,
            deny_delete=True,
            deny_purge=True,
            allow_atomic=True,
            allow_direct=True,
        )


def translate_error(exc: BaseException, doing: str) -> PersistenceError:
    """A nats-py or MVS error as the PEP 249 error eventsourcing expects."""
    if isinstance(exc, PersistenceError):
        return exc
    if isinstance(exc, APIError):
        desc = exc.description or type(exc).__name__
        if exc.code == 404 or exc.err_code in (10059, 10174, 10164):
            # Missing stream, atomic publish disabled, misuse of expectation headers.
            return ProgrammingError(f"{doing}: {desc} (err {exc.err_code})")
        if exc.code == 400 and exc.err_code in (10071, 10201):
            return IntegrityError(f"{doing}: {desc}")
        return OperationalError(f"{doing}: {desc} (code {exc.code}, err {exc.err_code})")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, nats.errors.TimeoutError)):
        return OperationalError(f"{doing}: NATS did not answer in time")
    if isinstance(exc, (nats.errors.Error, OSError, MvsError)):
        return OperationalError(f"{doing}: {exc or type(exc).__name__}")
    if isinstance(exc, ValueError):
        return ProgrammingError(f"{doing}: {exc}")
    return OperationalError(f"{doing}: {type(exc).__name__}: {exc}")


# Runtimes not closed yet. A factory nobody closed keeps its loop thread (a daemon) and its
# client alive until the interpreter ends; once the server is gone that client retries the
# dead address every half second and logs each refusal to stderr, so they are closed at exit.
_OPEN: weakref.WeakSet[NatsRuntime] = weakref.WeakSet()


def _close_open_runtimes() -> None:
    for runtime in list(_OPEN):
        with contextlib.suppress(Exception):
            runtime.close()


atexit.register(_close_open_runtimes)


class NatsRuntime:
    """A nats-py connection living on its own event-loop thread.

    ``call`` runs a coroutine there and waits for it from any other thread; ``close``
    drains the connection and stops the thread (at interpreter exit if nobody did). Used by
    the recorders of one factory.
    """

    def __init__(self, url: str, *, name: str = "mvs-eventstore", timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self._closed = False
        self._thread.start()
        self.nc: Client
        self.mux = ReplyMux()
        from mvs.bus import connect  # bus imports nats-server helpers; keep import local

        async def _open() -> None:
            self.nc = await connect(url, name=name, connect_timeout=timeout / 2)
            await self.mux.start(self.nc)

        try:
            self.call(_open(), doing=f"connecting to NATS at {url}")
        except BaseException:
            self._stop_loop()
            raise
        _OPEN.add(self)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def closed(self) -> bool:
        return self._closed

    def call(
        self, coro: Coroutine[Any, Any, T], *, doing: str, timeout: float | None = None
    ) -> T:
        """Run ``coro`` on the loop and return its result; errors become PEP 249 errors."""
        if self._closed:
            coro.close()
            raise OperationalError(f"{doing}: the event store's NATS connection is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout if timeout is not None else self.timeout * 3)
        except BaseException as exc:
            future.cancel()
            raise translate_error(exc, doing) from exc

    def close(self) -> None:
        """Drain and close the connection, cancel what still runs on the loop, stop it."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)

        async def _shutdown() -> None:
            if not hasattr(self, "nc"):
                return
            if self.nc.is_connected:
                try:
                    await asyncio.wait_for(self.nc.drain(), self.timeout)
                except Exception:  # a dead server must not block shutdown
                    log.debug("drain failed; closing the NATS connection", exc_info=True)
            if not self.nc.is_closed:
                await self.nc.close()

        # Closing is best effort: the loop stops below whatever happens.
        with contextlib.suppress(Exception):
            future = asyncio.run_coroutine_threadsafe(_shutdown(), self.loop)
            future.result(self.timeout * 2 + 5)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=self.timeout)
        if self._thread.is_alive():
            return  # a call is stuck in the loop; the daemon thread ends with the process
        # The loop thread has ended: finish what is still pending (calls from threads that
        # raced with close, nats-py's internal tasks) here, as asyncio.run does.
        pending = asyncio.all_tasks(self.loop)

        async def _cancel_all() -> None:
            await asyncio.gather(*(cancel_and_wait(t) for t in pending))

        with contextlib.suppress(Exception):
            self.loop.run_until_complete(_cancel_all())
        self.loop.close()
