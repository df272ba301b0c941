"""One pull consumer of the event log feeding every projection of a host.

With a consumer per projection, every event reached the host twice (``history`` takes all of
them, and one domain projection) and was parsed twice in the client's read loop, which held
the GIL for ~40% of a host's catch-up (measured on 400k mixed events). A :class:`Feed` reads
the log once and hands each runner the messages of its subjects; the runners fold their
share of a batch side by side in the host's fold threads. The feed's *floor* is the last
sequence every runner has committed (it tells when the host is idle, and what a runner
with nothing to fold may store as its position). Exactly-once is unchanged: each runner's
rows and position commit in its own DuckDB transaction, a message at or below a runner's
position is skipped, and on (re)start the consumer begins after the lowest position of all
runners.

Routing is by event domain (``mvs.evt.<domain>.<key>``), so a projection's subjects must be
``mvs.evt.>`` or ``mvs.evt.<domain>.>``; every projection MVS has is. The consumer has one
filter subject, the one domain's or every event, and the feed skips the events of domains
no runner takes (several filter subjects make nats-server slow: ``streams.subjects``). A
runner that sees no event of its subjects for a while still moves its stored position on
(:data:`ADVANCE_EVERY`), so that a restart does not read back the whole log for a
projection that rarely gets events.

The batches come from an intake process (:mod:`projections.intake`: fetched, routed and,
for the projections that prepare, laid out there) or, without one, from a pull consumer read
in this process; either way the feed schedules the folds here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mvs.errors import ProjectionError
from projections.base import Prepared
from projections.intake import Batch, IntakeProcess, IntakeSpec, Router, Share
from projections.runner import BATCH, ProjectionRunner, Puller, create_consumer, open_puller
from streams.definitions import EVENTS_STREAM
from streams.subjects import consumer_domains, consumer_filter

__all__ = ["ADVANCE_EVERY", "FEED_DURABLE", "IN_FLIGHT", "MIN_SHARE", "Feed"]

FEED_DURABLE = "proj_feed"
# a runner with nothing to fold stores its position when it lags the feed by this much
ADVANCE_EVERY = 50_000
# batches folding at once (each runner folds its shares of them in order)
IN_FLIGHT = 3
# a share below this fraction of a batch waits for the runner's next share (see Feed._fold)
MIN_SHARE = 0.5
# ... but no longer than this many batches (a held share holds the floor back)
HOLD_BATCHES = 4

# the intake process may fail this many times in a row (no batch in between) before the
# feed stops starting it and reads the log in the writer
INTAKE_RESTARTS = 3

log = logging.getLogger(__name__)


def _domains(runner: ProjectionRunner) -> frozenset[str] | None:
    """The domains a runner's projection takes, or None for all of them."""
    try:
        return consumer_domains(runner.projection.subjects)
    except ValueError as exc:
        raise ProjectionError(
            f"projection {runner.name}: {exc} (the shared feed routes by domain)"
        ) from exc


class _Local:
    """Batches fetched and routed in this process (no intake process)."""

    def __init__(self, puller: Puller, router: Router, batch: int) -> None:
        self.puller = puller
        self.router = router
        self.batch = batch

    async def next(self, wait: bool, timeout: float) -> Batch | None:
        got = await self.puller.fetch_columns(self.batch, timeout, wait=wait)
        if not got.seqs:
            return None
        split = self.router.split(got.subjects)
        msgs = got.messages()
        return Batch(
            msgs[-1].seq, len(msgs),
            {
                name: Share(msgs if pos is None else [msgs[i] for i in pos], None)
                for name, pos in split.items()
            },
        )

    async def stop(self) -> None:
        await self.puller.stop()


def _joined(parts: list[Share]) -> Share:
    """Consecutive shares of one runner as one share."""
    if len(parts) == 1:
        return parts[0]
    prepared = [p.prepared for p in parts if p.prepared is not None]
    return Share(
        [m for p in parts for m in p.msgs],
        Prepared.combine(prepared) if len(prepared) == len(parts) else None,
    )


class Feed:
    """Drives several :class:`ProjectionRunner` from one durable consumer (module docstring).

    ``intake_url``: read and lay batches out in an intake process connected there
    (:mod:`projections.intake`); None reads them in this process.
    """

    def __init__(
        self,
        js: JetStreamContext,
        runners: Iterable[ProjectionRunner],
        *,
        batch: int = BATCH,
        executor: Executor | None = None,
        durable: str = FEED_DURABLE,
        on_idle: Callable[[], None] | None = None,
        intake_url: str | None = None,
        idle_timeout: float = 1.0,
    ) -> None:
        self.js = js
        # called in a fold thread when the log is read after folding something
        self.on_idle = on_idle
        self.runners = list(runners)
        self.batch = batch
        self.executor = executor
        self.durable = durable
        self.intake_url = intake_url
        self.idle_timeout = idle_timeout
        self._domains = {r.name: _domains(r) for r in self.runners}
        self._source: _Local | IntakeProcess | None = None
        # each runner's last queued job: its next one starts after it
        self._tails: dict[ProjectionRunner, asyncio.Future[None]] = {}
        # a runner's shares too small to be worth a fold of their own yet (see _fold)
        self._held: dict[ProjectionRunner, list[Share]] = {}
        # the last seq of folded batches above the floor, oldest first
        self._folded: collections.deque[int] = collections.deque()
        self.start_seq = 0
        # every message up to this seq is committed by every runner (module docstring)
        self.floor = 0

    async def subscribe(self) -> None:
        """(Re)create the consumer after the lowest position of the runners and read it."""
        await self.close()
        if not self.runners:
            with contextlib.suppress(NotFoundError):
                await self.js.delete_consumer(EVENTS_STREAM, self.durable)
            return
        self.start_seq = min(r.last_seq for r in self.runners) + 1
        self.floor = self.start_seq - 1
        every = any(d is None for d in self._domains.values())
        domains = None if every else {d for ds in self._domains.values() if ds for d in ds}
        options: dict[str, Any] = {
            "durable": self.durable,
            "description": "MVS projections (one feed for every projection of the host)",
            "start_seq": self.start_seq,
            # one filter subject: the one domain's, else everything (streams.subjects)
            "filters": [consumer_filter(domains)],
        }
        if self.intake_url is None:
            puller = await open_puller(self.js, **options)
            self._source = _Local(puller, Router(self._domains), self.batch)
            return
        await create_consumer(self.js, **options)
        intake = IntakeProcess(
            IntakeSpec(
                url=self.intake_url, durable=self.durable, batch=self.batch,
                idle_timeout=self.idle_timeout,
                runners={
                    r.name: (
                        r.projection.name, r.projection.suffix,
                        None if (d := self._domains[r.name]) is None else sorted(d),
                    )
                    for r in self.runners
                },
            )
        )
        await intake.start()
        self._source = intake

    async def close(self) -> None:
        if self._source is not None:
            source, self._source = self._source, None
            await source.stop()

    async def delete(self) -> None:
        await self.close()
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(EVENTS_STREAM, self.durable)

    async def idle(self) -> bool:
        """Whether everything delivered so far is folded, and nothing is pending."""
        try:
            ci = await self.js.consumer_info(EVENTS_STREAM, self.durable)
        except NotFoundError:
            return False
        return ci.num_pending == 0 and self.floor >= (ci.delivered.stream_seq or 0)

    async def lag(self) -> int | None:
        """Messages of the feed's subjects not folded yet (delivered or not)."""
        try:
            ci = await self.js.consumer_info(EVENTS_STREAM, self.durable)
        except NotFoundError:
            return None
        unfolded = max(0, int(ci.delivered.stream_seq or 0) - self.floor)
        return int(ci.num_pending or 0) + unfolded

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the log until ``stop`` is set.

        Up to :data:`IN_FLIGHT` batches fold at once: each runner takes its shares in order,
        and one that is done with a batch starts on the next while the others finish (a
        barrier per batch left the GIL idle a third of the time). The floor rises to a batch once
        every runner has committed all of it (shares held back included).
        An intake process that fails is started again from the runners' positions; after
        :data:`INTAKE_RESTARTS` failures in a row the writer reads the log itself.
        """
        inflight: collections.deque[tuple[asyncio.Future[list[None]], int]] = (
            collections.deque()
        )
        busy = False
        failures = 0
        try:
            while not stop.is_set() and self._source is not None:
                # while batches fold or shares are held, take only what is there; before
                # waiting for new events, fold everything, so positions never lag
                waited = not inflight and not self._held
                try:
                    batch = await self._source.next(waited, self.idle_timeout)
                except ProjectionError as exc:
                    if not isinstance(self._source, IntakeProcess):
                        raise
                    failures += 1
                    if failures > INTAKE_RESTARTS:
                        # the projections go on, slower: this process reads the log itself
                        log.error("%s; reading the log in the writer from now on", exc)
                        self.intake_url = None
                    else:
                        log.error("%s; starting it again (%d/%d)", exc, failures,
                                  INTAKE_RESTARTS)
                    await self._restart(inflight)
                    continue
                if batch is not None:
                    busy = True
                    failures = 0
                elif waited and busy and self.on_idle is not None:
                    # everything folded, nothing new: a quiet moment to tidy up
                    busy = False
                    await asyncio.get_running_loop().run_in_executor(self.executor, self.on_idle)
                if batch is not None:
                    # a short batch: the log is (nearly) read, nothing is worth holding
                    flush = batch.size < self.batch
                    inflight.append((self._fold(batch, flush=flush), batch.last_seq))
                elif self._held:
                    inflight.append((self._fold(None, flush=True), 0))
                while inflight and (
                    inflight[0][0].done() or batch is None or len(inflight) >= IN_FLIGHT
                ):
                    done, last = inflight.popleft()
                    await done
                    if last:
                        self._folded.append(last)
                    self._raise_floor()
            if self._held:
                await self._fold(None, flush=True)
                self._raise_floor()
        finally:
            # a failed batch fails the ones queued behind it; wait for them before leaving
            for done, _ in inflight:
                with contextlib.suppress(Exception):
                    await done
            self._tails.clear()

    async def _restart(
        self, inflight: collections.deque[tuple[asyncio.Future[list[None]], int]]
    ) -> None:
        """Let what is folding finish, forget the rest above the floor and read again from the
        runners' positions (what was not folded is delivered again)."""
        while inflight:
            await inflight.popleft()[0]
        self._held.clear()
        self._folded.clear()
        await asyncio.sleep(0.5)
        await self.subscribe()

    def _fold(self, batch: Batch | None, *, flush: bool) -> asyncio.Future[list[None]]:
        """Queue every runner's fold of its share of ``batch``; one future for all of them.

        A share smaller than :data:`MIN_SHARE` of the batch is held back and folded with the
        runner's next share (each fold costs a transaction and a few statements whatever
        its size: a projection with a twentieth of the traffic spent 4x the time of one
        fold on twenty small ones), unless ``flush``.
        """
        shares = batch.shares if batch is not None else {}
        last = batch.last_seq if batch is not None else 0
        least = max(1, int(self.batch * MIN_SHARE))
        span = HOLD_BATCHES * self.batch
        jobs = []
        for runner in self.runners:
            parts = self._held.pop(runner, [])
            share = shares.get(runner.name)
            if share is not None and share.msgs:
                parts.append(share)
            size = sum(len(p.msgs) for p in parts)
            # held too long, it would hold the floor back (and its messages in memory)
            if parts and (flush or size >= least or last - parts[0].msgs[0].seq >= span):
                whole = _joined(parts)
                job = self._then(runner, runner.apply, whole.msgs, whole.prepared)
            elif parts:
                self._held[runner] = parts
                continue
            elif batch is not None and last - runner.last_seq >= ADVANCE_EVERY:
                job = self._then(runner, runner.advance, last)
            else:
                continue
            jobs.append(job)
        return asyncio.gather(*jobs)

    def _raise_floor(self) -> None:
        """The floor rises to the newest folded batch that no held share reaches back into."""
        held = min((parts[0].msgs[0].seq for parts in self._held.values()), default=None)
        while self._folded and (held is None or self._folded[0] < held):
            self.floor = max(self.floor, self._folded.popleft())

    def _then(
        self, runner: ProjectionRunner, fn: Callable[..., None], *args: Any
    ) -> asyncio.Future[None]:
        """Run ``fn(*args)`` in a fold thread after ``runner``'s previous job."""
        before = self._tails.get(runner)

        async def job() -> None:
            if before is not None:
                await before
            await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

        tail = asyncio.ensure_future(job())
        self._tails[runner] = tail
        return tail

    async def settle(self) -> None:
        """Store the position of runners that folded nothing recently (on a clean stop)."""
        if self._source is None:
            return
        # everything up to the floor was seen by every runner
        floor = self.floor
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(self.executor, r.advance, floor)
                for r in self.runners
                if r.last_seq < floor
            )
        )
