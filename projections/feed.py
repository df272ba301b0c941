"""One pull consumer of the event log feeding every projection of a host.

With a consumer per projection, every event reached the host twice (``history`` takes all of
them, and one domain projection) and was parsed twice in the client's read loop, which held
the GIL for ~40% of a host's catch-up (measured on 400k mixed events). A :class:`Feed` reads
the log once and hands each runner the messages of its subjects; the runners fold their
share of a batch side by side in the host's fold threads, and the batch is acked only when
every runner has committed it. Exactly-once is unchanged: each runner's rows and position
commit in its own DuckDB transaction, a message at or below a runner's position is skipped,
and on (re)start the consumer begins after the lowest position of all runners.

Routing is by event domain (``mvs.evt.<domain>.<key>``), so a projection's subjects must be
``mvs.evt.>`` or ``mvs.evt.<domain>.>``; every projection MVS has is. The consumer has one
filter subject, the one domain's or every event, and the feed skips the events of domains
no runner takes (several filter subjects make nats-server slow: ``streams.subjects``). A
runner that sees no event of its subjects for a while still moves its stored position on
(:data:`ADVANCE_EVERY`), so that a restart does not read back the whole log for a
projection that rarely gets events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mvs.errors import ProjectionError
from projections.runner import ProjectionRunner, Puller, RawMessage, open_puller
from streams.definitions import EVENTS_STREAM
from streams.subjects import EVENTS_PREFIX, consumer_domains, consumer_filter

__all__ = ["ADVANCE_EVERY", "FEED_DURABLE", "IN_FLIGHT", "MIN_SHARE", "Feed"]

FEED_DURABLE = "proj_feed"
# a runner with nothing to fold stores its position when it lags the feed by this much
ADVANCE_EVERY = 50_000
# batches folding at once (each runner folds its shares of them in order)
IN_FLIGHT = 3
# a share below this fraction of a batch waits for the runner's next share (see Feed._fold)
MIN_SHARE = 0.5
# ... but no longer than this many batches (the unacked ones must stay below max_ack_pending)
HOLD_BATCHES = 4

_ALL = f"{EVENTS_PREFIX}.>"
_PREFIX = f"{EVENTS_PREFIX}."
_START = len(_PREFIX)


def _domains(runner: ProjectionRunner) -> frozenset[str] | None:
    """The domains a runner's projection takes, or None for all of them."""
    try:
        return consumer_domains(runner.projection.subjects)
    except ValueError as exc:
        raise ProjectionError(
            f"projection {runner.name}: {exc} (the shared feed routes by domain)"
        ) from exc


class Feed:
    """Drives several :class:`ProjectionRunner` from one durable consumer (module docstring)."""

    def __init__(
        self,
        js: JetStreamContext,
        runners: Iterable[ProjectionRunner],
        *,
        batch: int = 10000,
        executor: Executor | None = None,
        durable: str = FEED_DURABLE,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.js = js
        # called in a fold thread when the log is read after folding something
        self.on_idle = on_idle
        self.runners = list(runners)
        self.batch = batch
        self.executor = executor
        self.durable = durable
        self._everything = [r for r in self.runners if _domains(r) is None]
        self._by_domain: dict[frozenset[str], list[ProjectionRunner]] = {}
        for runner in self.runners:
            domains = _domains(runner)
            if domains is not None:
                self._by_domain.setdefault(domains, []).append(runner)
        # domain -> the runners (other than those taking everything) that fold it
        self._routes: dict[str, tuple[ProjectionRunner, ...]] = {}
        self._puller: Puller | None = None
        # each runner's last queued job: its next one starts after it
        self._tails: dict[ProjectionRunner, asyncio.Future[None]] = {}
        # a runner's share too small to be worth a fold of its own yet (see _fold)
        self._held: dict[ProjectionRunner, list[RawMessage]] = {}
        # (last seq, ack subject) of folded batches not acked yet, oldest first
        self._acks: collections.deque[tuple[int, str]] = collections.deque()
        self.start_seq = 0

    def _route(self, domain: str) -> tuple[ProjectionRunner, ...]:
        runners = tuple(
            r for domains, rs in self._by_domain.items() if domain in domains for r in rs
        )
        self._routes[domain] = runners
        return runners

    async def subscribe(self) -> None:
        """(Re)create the consumer after the lowest position of the runners and bind to it."""
        await self.close()
        if not self.runners:
            with contextlib.suppress(NotFoundError):
                await self.js.delete_consumer(EVENTS_STREAM, self.durable)
            return
        self.start_seq = min(r.last_seq for r in self.runners) + 1
        domains = None if self._everything else {d for ds in self._by_domain for d in ds}
        self._puller = await open_puller(
            self.js,
            durable=self.durable,
            description="MVS projections (one feed for every projection of the host)",
            start_seq=self.start_seq,
            # one filter subject: the one domain's, else everything (streams.subjects)
            filters=[consumer_filter(domains)],
            # held shares stay unacked: room for HOLD_BATCHES of them and IN_FLIGHT more
            max_ack_pending=max((HOLD_BATCHES + IN_FLIGHT + 3) * self.batch, 10000),
        )

    async def close(self) -> None:
        if self._puller is not None:
            await self._puller.stop()
            self._puller = None

    async def delete(self) -> None:
        await self.close()
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(EVENTS_STREAM, self.durable)

    async def idle(self) -> bool:
        """Whether everything delivered so far is folded and acked, and nothing is pending."""
        try:
            ci = await self.js.consumer_info(EVENTS_STREAM, self.durable)
        except NotFoundError:
            return False
        return (
            ci.num_pending == 0
            and ci.num_ack_pending == 0
            and (ci.ack_floor.stream_seq or 0) >= (ci.delivered.stream_seq or 0)
        )

    async def lag(self) -> int | None:
        try:
            ci = await self.js.consumer_info(EVENTS_STREAM, self.durable)
        except NotFoundError:
            return None
        return int(ci.num_pending or 0) + int(ci.num_ack_pending or 0)

    async def run(self, stop: asyncio.Event, *, idle_timeout: float = 1.0) -> None:
        """Follow the log until ``stop`` is set.

        Up to :data:`IN_FLIGHT` batches fold at once: each runner takes its shares in order,
        and one that is done with a batch starts on the next while the others finish (a
        barrier per batch left the GIL idle a third of the time). A batch is acked once every
        runner has committed all of it (shares held back included), newest safe batch only.
        """
        if self._puller is None:
            return
        puller = self._puller
        inflight: collections.deque[tuple[asyncio.Future[list[None]], int, str]] = (
            collections.deque()
        )
        busy = False
        try:
            while not stop.is_set():
                # while batches fold or shares are held, take only what is there; before
                # waiting for new events, fold everything and ack, so positions never lag
                waited = not inflight and not self._held
                msgs, ack = await puller.fetch(self.batch, idle_timeout, wait=waited)
                if msgs:
                    busy = True
                elif waited and busy and self.on_idle is not None:
                    # everything folded and acked, nothing new: a quiet moment to tidy up
                    busy = False
                    await asyncio.get_running_loop().run_in_executor(self.executor, self.on_idle)
                if msgs:
                    # a short batch: the log is (nearly) read, nothing is worth holding
                    flush = len(msgs) < self.batch
                    inflight.append((self._fold(msgs, flush=flush), msgs[-1].seq, ack))
                elif self._held:
                    inflight.append((self._fold([], flush=True), 0, ""))
                while inflight and (
                    inflight[0][0].done() or not msgs or len(inflight) >= IN_FLIGHT
                ):
                    done, last, ack = inflight.popleft()
                    await done
                    if ack:
                        self._acks.append((last, ack))
                    await self._send_acks()
            if self._held:
                await self._fold([], flush=True)
                await self._send_acks()
        finally:
            # a failed batch fails the ones queued behind it; wait for them before leaving
            for done, _, _ in inflight:
                with contextlib.suppress(Exception):
                    await done
            self._tails.clear()

    def _fold(self, msgs: list[RawMessage], *, flush: bool) -> asyncio.Future[list[None]]:
        """Queue every runner's fold of its share of ``msgs``; one future for all of them.

        A share smaller than :data:`MIN_SHARE` of the batch is held back and folded with the
        runner's next share (each fold costs a transaction and a few statements whatever
        its size: a projection with a twentieth of the traffic spent 4x the time of one
        fold on twenty small ones), unless ``flush``.
        """
        shares: dict[ProjectionRunner, list[RawMessage]] = {r: [] for r in self.runners}
        routes = self._routes
        for m in msgs:
            # the domain of mvs.evt.<domain>.<key>
            subject = m.subject
            end = subject.find(".", _START)
            domain = subject[_START:end] if end > 0 else subject[_START:]
            runners = routes.get(domain)
            if runners is None:
                runners = self._route(domain)
            for r in runners:
                shares[r].append(m)
        for r in self._everything:
            shares[r] = msgs
        last = msgs[-1].seq if msgs else 0
        least = max(1, int(self.batch * MIN_SHARE))
        span = HOLD_BATCHES * self.batch
        jobs = []
        for runner, share in shares.items():
            held = self._held.pop(runner, None)
            if held is not None:
                share = held + share
            # held too long, it would hold the acks back until the consumer stalls
            if share and (flush or len(share) >= least or last - share[0].seq >= span):
                job = self._then(runner, runner.apply, share)
            elif share:
                self._held[runner] = share
                continue
            elif msgs and last - runner.last_seq >= ADVANCE_EVERY:
                job = self._then(runner, runner.advance, last)
            else:
                continue
            jobs.append(job)
        return asyncio.gather(*jobs)

    async def _send_acks(self) -> None:
        """Ack the newest folded batch that no held share reaches back into."""
        floor = min((share[0].seq for share in self._held.values()), default=None)
        safe = ""
        while self._acks and (floor is None or self._acks[0][0] < floor):
            safe = self._acks.popleft()[1]
        if safe:
            await self.js._nc.publish(safe, b"+ACK")

    def _then(
        self, runner: ProjectionRunner, fn: Callable[[Any], None], arg: Any
    ) -> asyncio.Future[None]:
        """Run ``fn(arg)`` in a fold thread after ``runner``'s previous job."""
        before = self._tails.get(runner)

        async def job() -> None:
            if before is not None:
                await before
            await asyncio.get_running_loop().run_in_executor(self.executor, fn, arg)

        tail = asyncio.ensure_future(job())
        self._tails[runner] = tail
        return tail

    async def settle(self) -> None:
        """Store the position of runners that folded nothing recently (on a clean stop)."""
        if self._puller is None:
            return
        # everything below the ack floor was seen by every runner
        try:
            ci = await self.js.consumer_info(EVENTS_STREAM, self.durable)
        except NotFoundError:
            return
        floor = int(ci.ack_floor.stream_seq or 0)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(self.executor, r.advance, floor)
                for r in self.runners
                if r.last_seq < floor
            )
        )
