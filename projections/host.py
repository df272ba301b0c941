"""The process that owns the DuckDB file: runs every projection and serves read-only queries.

DuckDB allows one writer process per file, so one :class:`ProjectionHost` owns
``mvs.duckdb`` while the system runs; everyone else queries through it over NATS.

Usage from a supervisor::

    nc = await connect(url)
    async with ProjectionHost(nc, settings.duckdb_path) as host:   # starts all projections
        await host.catch_up()          # every projection has folded the whole stream
        await host.wait_for(seq)       # ... or at least up to stream sequence ``seq``
        report = await host.rebuild("memory")   # rebuild from seq 0, swap in, checksums
        ...                            # host.stop() on exit

``start()`` applies the stream definitions, creates the tables and (re)creates one durable
pull consumer, the :class:`~projections.feed.Feed`, after the lowest stored position; it reads
the log once and hands each projection the events of its subjects. The reading and the
stateless half of the folds run in an intake process (:mod:`projections.intake`) unless
``intake=False``. It serves

* ``mvs.svc.query.sql``: a SELECT, answered as an Arrow IPC stream (see :mod:`projections.query`);
* ``mvs.svc.query.export``: write every table to Parquet in a directory;
* ``mvs.svc.projections.status``: positions and lag;
* ``mvs.svc.projections.rebuild``: rebuild one projection.

and advertises itself in ``projections-runtime.json`` beside the DuckDB file, so that
``mvs query`` knows to ask it instead of opening the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from mvs.errors import MvsError, ProjectionError
from projections import query as q
from projections.feed import Feed
from projections.rebuild import RebuildReport, rebuild
from projections.registry import PROJECTIONS, projection
from projections.runner import (
    BATCH,
    DUCKDB_MEMORY_MB,
    DUCKDB_THREADS,
    GC_THRESHOLD,
    DecodeCache,
    ProjectionRunner,
    create_core_schema,
    open_db,
    transaction,
)
from streams.definitions import EVENTS_STREAM, apply_streams

__all__ = ["GC_THRESHOLD", "ProjectionHost", "Status"]

log = logging.getLogger(__name__)



class Status(msgspec.Struct, frozen=True, kw_only=True):
    projection: str
    last_seq: int
    lag: int | None
    events_applied: int = 0
    dead_letters: int = 0


class ProjectionHost:
    """Runs projections over one DuckDB file; see the module docstring."""

    def __init__(
        self,
        nc: Client,
        duckdb_path: Path | str,
        *,
        names: tuple[str, ...] | None = None,
        batch: int = BATCH,
        serve: bool = True,
        url: str | None = None,
        fold_threads: int | None = None,
        memory_mb: int = DUCKDB_MEMORY_MB,
        intake: bool = True,
        duckdb_threads: int = DUCKDB_THREADS,
    ) -> None:
        self.nc = nc
        self.memory_mb = memory_mb
        self.duckdb_threads = duckdb_threads
        # read and lay out the log in an intake process (projections.intake), else here
        self.intake = intake
        self.js = nc.jetstream(timeout=10.0)
        self.path = Path(duckdb_path)
        self.names = names or tuple(PROJECTIONS)
        self.batch = batch
        self.serve = serve
        self.url = url or (nc.connected_url.geturl() if nc.connected_url else "")
        self.db: duckdb.DuckDBPyConnection | None = None
        self.runners: dict[str, ProjectionRunner] = {}
        # one consumer for every runner not being rebuilt (see projections.feed)
        self.feed: Feed | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_feed = asyncio.Event()
        self._subs: list[Subscription] = []
        self._rebuilding = asyncio.Lock()
        # one decode per event for all projections (history and its domain projection)
        self.decoder = DecodeCache()
        # Folds run on their own pool, one thread per projection by default: DuckDB releases
        # the GIL inside each statement, so folds overlap; measured on 100k events, one shared
        # fold thread was ~20% slower than one per projection (2 threads: about the same).
        self.fold_threads = fold_threads or len(self.names)
        self._executor: ThreadPoolExecutor | None = None
        self._gc_before: tuple[int, int, int] | None = None

    @property
    def advert_path(self) -> Path:
        return q.advert_path(self.path)

    async def __aenter__(self) -> ProjectionHost:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._gc_before is None and gc.get_threshold() != GC_THRESHOLD:
            self._gc_before = gc.get_threshold()
            gc.set_threshold(*GC_THRESHOLD)
        await apply_streams(self.js)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = open_db(str(self.path), self.memory_mb, self.duckdb_threads)
        except duckdb.Error as exc:
            raise ProjectionError(f"cannot open {self.path} for writing: {exc}") from exc
        con = self.db.cursor()
        with transaction(con):
            create_core_schema(con)
        self._executor = ThreadPoolExecutor(self.fold_threads, thread_name_prefix="mvs-fold")
        for name in self.names:
            runner = ProjectionRunner(
                projection(name), self.db, self.js, batch=self.batch, decoder=self.decoder,
                executor=self._executor,
            )
            runner.prepare()
            # a consumer of its own, left by a rebuild that did not finish (or an older MVS)
            with contextlib.suppress(NotFoundError):
                await self.js.delete_consumer(EVENTS_STREAM, runner.durable)
            self.runners[name] = runner
        await self._follow(list(self.runners.values()))
        if self.serve:
            await self._serve()
            self._advertise()

    async def _follow(self, runners: list[ProjectionRunner]) -> None:
        """Feed ``runners`` from one consumer starting after the lowest of their positions."""
        await self._halt()
        self.feed = Feed(
            self.js, runners, batch=self.batch, executor=self._executor, on_idle=self._tidy,
            intake_url=self.url if self.intake and self.url else None,
        )
        await self.feed.subscribe()
        self._stop_feed = asyncio.Event()
        self._task = asyncio.create_task(self.feed.run(self._stop_feed), name="proj-feed")

    def _tidy(self) -> None:
        """After a catch-up, give back what folding held: decoded events and DuckDB's WAL.

        Up to the checkpoint threshold (256 MB) of folded rows stay in DuckDB's memory until
        a checkpoint; after catching up 1M events the writer held ~860 MB, ~510 MB after a
        checkpoint. A query running meanwhile makes the checkpoint fail: the next quiet
        moment tries again (and DuckDB checkpoints by itself at the threshold).
        """
        self.decoder.clear()
        if self.db is None:
            return
        try:
            self.db.cursor().execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.debug("checkpoint after catch-up skipped: %s", exc)

    async def _halt(self) -> None:
        """Stop the feed after the batch it is folding; store the idle runners' positions."""
        if self._task is None or self.feed is None:
            return
        self._stop_feed.set()
        task, self._task = self._task, None
        try:
            await task
        finally:
            with contextlib.suppress(Exception):  # the server may be gone: still close the feed
                await self.nc.flush()
                await self.feed.settle()
            await self.feed.close()

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        try:
            await self._halt()
        finally:  # whatever the feed did, the file is closed (and checkpointed)
            self.feed = None
            self.runners.clear()
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            with contextlib.suppress(FileNotFoundError):
                if self._owns_advert():
                    self.advert_path.unlink()
            if self.db is not None:
                self.db.close()
                self.db = None
            if self._gc_before is not None:
                gc.set_threshold(*self._gc_before)
                self._gc_before = None

    async def wait_for(self, seq: int, *, timeout: float | None = 60.0) -> None:
        """Return once every projection has applied every event of its subjects up to ``seq``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for name, runner in self.runners.items():
            while not await self._reached(runner, seq):
                self._check_feed()
                if deadline is not None and time.monotonic() > deadline:
                    raise ProjectionError(
                        f"projection {name} did not reach seq {seq} in {timeout}s "
                        f"(at {runner.last_seq})"
                    )
                await asyncio.sleep(0.02)

    async def catch_up(self, *, timeout: float | None = 60.0) -> int:
        """Wait until every projection has folded the stream as it stands now; its last seq."""
        info = await self.js.stream_info(EVENTS_STREAM)
        seq = int(info.state.last_seq)
        await self.wait_for(seq, timeout=timeout)
        return seq

    def _check_feed(self) -> None:
        """Raise if the feed stopped by itself (a fold failed beyond dead-lettering)."""
        task = self._task
        if task is None or not task.done():
            return
        exc = None if task.cancelled() else task.exception()
        raise ProjectionError(
            "the projections' feed stopped: "
            + (f"{type(exc).__name__}: {exc}" if exc is not None else "cancelled")
        )

    async def _reached(self, runner: ProjectionRunner, seq: int) -> bool:
        # the position first: asking the server whether the feed is idle costs a request
        return runner.last_seq >= seq or (await self.position(runner.name))[1]

    def _fed(self, runner: ProjectionRunner) -> bool:
        return self.feed is not None and self._task is not None and runner in self.feed.runners

    async def position(self, name: str) -> tuple[int, bool]:
        """(the last seq projection ``name`` applied, whether nothing is left for it to fold).

        A projection sees only its subjects, so its position can stay below the stream's:
        it is caught up when the feed has nothing pending and every delivered message is
        folded (the feed's floor has reached the last one delivered).
        """
        runner = self.runners.get(name)
        if runner is None:
            raise ProjectionError(f"projection {name!r} is not run by this host")
        assert self.feed is not None
        return runner.last_seq, self._fed(runner) and await self.feed.idle()

    async def status(self) -> list[Status]:
        out = []
        feed_lag = None if self.feed is None else await self.feed.lag()
        for name, runner in self.runners.items():
            lag = feed_lag if self._fed(runner) else None
            out.append(
                Status(
                    projection=name, last_seq=runner.last_seq, lag=lag,
                    events_applied=runner.events_applied, dead_letters=runner.dead_lettered,
                )
            )
        return out

    async def rebuild(self, name: str) -> RebuildReport:
        """Rebuild ``name`` from seq 0 beside the live tables and swap it in when caught up."""
        if name not in self.runners:
            raise ProjectionError(f"projection {name!r} is not run by this host")
        assert self.db is not None
        async with self._rebuilding:
            live = self.runners[name]
            # the others follow on while this one rebuilds through consumers of its own
            await self._follow([r for r in self.runners.values() if r is not live])
            try:
                await live.subscribe()
                return await rebuild(self.db, self.js, live, batch=self.batch)
            finally:
                await live.close()
                with contextlib.suppress(NotFoundError):
                    await self.js.delete_consumer(EVENTS_STREAM, live.durable)
                await self._follow(list(self.runners.values()))

    def query(self, sql: str) -> bytes:
        """Run a read-only query; the result as an Arrow IPC stream."""
        assert self.db is not None
        return q.to_ipc(q.run_readonly(self.db.cursor(), sql))

    async def _serve(self) -> None:
        async def on_sql(msg: Msg) -> None:
            await self._reply(msg, lambda: self.query(msg.data.decode()), threaded=True)

        async def on_export(msg: Msg) -> None:
            assert self.db is not None
            db = self.db
            await self._reply(
                msg,
                lambda: json.dumps(q.export_parquet(db.cursor(), Path(msg.data.decode()))).encode(),
                threaded=True,
            )

        async def on_status(msg: Msg) -> None:
            await self._reply_async(msg, self._status_bytes)

        async def on_rebuild(msg: Msg) -> None:
            async def run() -> bytes:
                return msgspec.json.encode(await self.rebuild(msg.data.decode()))

            await self._reply_async(msg, run)

        for subject, cb in (
            (q.QUERY_SUBJECT, on_sql),
            (q.EXPORT_SUBJECT, on_export),
            (q.STATUS_SUBJECT, on_status),
            (q.REBUILD_SUBJECT, on_rebuild),
        ):
            self._subs.append(await self.nc.subscribe(subject, cb=cb))

    async def _status_bytes(self) -> bytes:
        return msgspec.json.encode(await self.status())

    async def _reply(self, msg: Msg, fn: Any, *, threaded: bool) -> None:
        async def run() -> bytes:
            return await asyncio.to_thread(fn) if threaded else fn()

        await self._reply_async(msg, run)

    async def _reply_async(self, msg: Msg, fn: Any) -> None:
        if not msg.reply:
            return
        try:
            data, headers = await fn(), {q.STATUS_HEADER: "ok"}
        except (MvsError, duckdb.Error) as exc:
            data, headers = str(exc).encode(), {q.STATUS_HEADER: "error"}
        except Exception as exc:  # a service answers every request, even on its own bug
            data = f"{type(exc).__name__}: {exc}".encode()
            headers = {q.STATUS_HEADER: "error"}
        limit = self.nc.max_payload - 1024
        if len(data) > limit:
            data = (
                f"the answer is {len(data)} bytes, more than NATS carries ({limit}): "
                "add a LIMIT or use `mvs export --parquet DIR`"
            ).encode()
            headers = {q.STATUS_HEADER: "error"}
        await self.nc.publish(msg.reply, data, headers=headers)

    def _advertise(self) -> None:
        path = self.advert_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "url": self.url, "db": str(self.path)}))
        tmp.replace(path)

    def _owns_advert(self) -> bool:
        try:
            return int(json.loads(self.advert_path.read_text())["pid"]) == os.getpid()
        except (OSError, ValueError, KeyError, TypeError):
            return False
