"""The intake of the projections' feed: reading the log and laying batches out, in a process of
its own.

A host folding every projection in one process was bound by the GIL (measured with py-spy on
400k mixed events: the GIL held 82% of the wall time, 40% of it the event loop reading NATS,
14% decoding), so one of the two cores sat mostly idle. The work splits in two:

* the **intake process** (``python -m projections.intake``) binds to the feed's durable
  consumer, fetches batches, routes each message to the runners of its domain (a
  :class:`Router`), decodes the events of the projections that have a stateless ``prepare``
  step (``history``, ``requests``) and lays their shares out as Arrow tables
  (:class:`~projections.base.Prepared`);
* the **writer** (the host, which owns the DuckDB file) folds each share: the prepared ones
  as they are, the others (or a prepared share holding a possible duplicate) by decoding
  and folding them itself, exactly as without an intake process.

The intake holds no state that matters: the positions are the runners' (in the DuckDB file)
and it is started afresh at the lowest of them whenever the feed (re)subscribes. Credit
bounds what it runs ahead: it sends a batch only for a credit the writer grants when it
takes one. A message the intake cannot decode leaves its share unprepared: the writer
decodes it again and dead-letters it with the reason.

Frames on the pipes are a 16-byte header (a magic number, the length, the number of
out-of-band buffers), a pickle and its buffers (Arrow's, not copied into it): the spec,
``credit N`` and ``stop`` from the writer (stdin); ``ready`` once bound to the feed, then
batches, and a last error if the intake fails, from the intake (stdout). Its stderr is the
writer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

import msgspec

from mvs import tasks
from mvs.errors import ProjectionError
from mvs.tasks import cancel_and_wait
from projections.base import Item, Prepared, Projection
from projections.registry import projection
from projections.runner import Columns, Puller, RawMessage
from streams.catalog import decode_event
from streams.definitions import EVENTS_STREAM
from streams.subjects import EVENTS_PREFIX

__all__ = [
    "Batch", "IntakeProcess", "IntakeSpec", "Router", "Share", "prepare_shares", "read_frame",
    "write_frame",
]

log = logging.getLogger(__name__)

# a frame: a magic number, the length of the pickle that follows and the number of its
# out-of-band buffers, each sent after the pickle as its length and its bytes
_HEADER = struct.Struct("<IQI")
_LENGTH = struct.Struct("<Q")
_MAGIC = 0x4D565346  # "MVSF"
_PREFIX = f"{EVENTS_PREFIX}."
_START = len(_PREFIX)
# a frame longer than this is a broken pipe, not a batch
_MAX_FRAME = 1 << 31
_MAX_BUFFERS = 1 << 20

# NamedTuples built per message skip their Python-level __new__ (see projections.runner)
_new = tuple.__new__


class Share(NamedTuple):
    """One runner's messages of a batch, and their layout if the intake prepared them."""

    msgs: list[RawMessage]
    prepared: Prepared | None


class Batch(NamedTuple):
    """A fetched batch: its last sequence, its size, the shares."""

    last_seq: int
    size: int
    shares: dict[str, Share]


class IntakeSpec(msgspec.Struct, frozen=True):
    """What the intake process needs to know (the first frame it reads)."""

    url: str
    durable: str
    batch: int
    idle_timeout: float
    # runner name -> (projection name, table suffix, the domains it takes or None for all)
    runners: dict[str, tuple[str, str, list[str] | None]]


class Router:
    """Which runners take each message of a batch, by the event's domain."""

    def __init__(self, takes: Mapping[str, frozenset[str] | None]) -> None:
        self.everything = [name for name, domains in takes.items() if domains is None]
        self._takes = {name: d for name, d in takes.items() if d is not None}
        # domain -> the runners (other than those taking everything) that fold it
        self._routes: dict[str, tuple[str, ...]] = {}

    def _route(self, domain: str) -> tuple[str, ...]:
        names = tuple(name for name, domains in self._takes.items() if domain in domains)
        self._routes[domain] = names
        return names

    def split(self, subjects: Iterable[str]) -> dict[str, list[int] | None]:
        """Per runner, the positions of its messages in the batch (None: all of them)."""
        out: dict[str, list[int] | None] = {name: [] for name in self._takes}
        routes = self._routes
        for i, subject in enumerate(subjects):
            # the domain of mvs.evt.<domain>.<key>
            end = subject.find(".", _START)
            domain = subject[_START:end] if end > 0 else subject[_START:]
            names = routes.get(domain)
            if names is None:
                names = self._route(domain)
            for name in names:
                out[name].append(i)  # type: ignore[union-attr]
        for name in self.everything:
            out[name] = None
        return out


def prepare_shares(
    batch: Columns,
    split: dict[str, list[int] | None],
    projections: Mapping[str, Projection],
) -> dict[str, Prepared | None]:
    """The prepared share of each runner whose projection prepares (see the module docstring).

    Every event is decoded once for all of them. A share with an undecodable event, or whose
    ``prepare`` fails, is left unprepared: the writer folds it the ordinary way.
    """
    wanted = {name: split.get(name, []) for name in projections}
    if not any(positions is None or positions for positions in wanted.values()):
        return {}
    # one Item per message any of them takes, shared by their shares
    seqs, subjects, datas = batch
    if any(positions is None for positions in wanted.values()):
        picked: list[int] | None = None
    else:
        picked = sorted({i for positions in wanted.values() if positions for i in positions})
        seqs = [seqs[i] for i in picked]
        subjects = [subjects[i] for i in picked]
        datas = [datas[i] for i in picked]
    events, bad = _decode_all(datas)
    made = [
        _new(Item, item) for item in zip(seqs, subjects, events, datas, strict=True)
    ]
    if picked is not None:
        bad = {picked[i] for i in bad}
    items: list[Item] | dict[int, Item] = (
        made if picked is None else dict(zip(picked, made, strict=True))
    )
    out: dict[str, Prepared | None] = {}
    for name, proj in projections.items():
        positions = wanted[name]
        if positions is not None and not positions:
            continue
        if bad and (positions is None or not bad.isdisjoint(positions)):
            out[name] = None  # the writer finds the message at fault and dead-letters it
            continue
        share = made if positions is None else [items[i] for i in positions]
        try:
            ids = [item.event.event_id for item in share] if proj.dedup else []
            out[name] = Prepared.make(ids, proj.prepare(share))
        except Exception as exc:  # likewise
            log.debug("share of %s left unprepared: %s", name, exc)
            out[name] = None
    return out


def _decode_all(datas: list[bytes]) -> tuple[list[Any], set[int]]:
    """Each message's event (None where it does not decode), and where it does not."""
    try:
        return [decode_event(data) for data in datas], set()
    except Exception:
        pass
    events: list[Any] = []
    bad: set[int] = set()
    for i, data in enumerate(datas):
        try:
            events.append(decode_event(data))
        except Exception:
            events.append(None)
            bad.add(i)
    return events, bad


def write_frame(out: IO[bytes], obj: Any) -> None:
    """Write one frame (blocking: the pipe's writes release the GIL).

    The pickle is made without a memo (``fast``: a batch holds no object twice that it
    matters to share) and with Arrow's buffers out of band, written after it as they are
    (measured on a 10k batch: 15.7 -> 3.1 ms to pickle, 3.1 -> 2.2 ms to unpickle).
    """
    buffers: list[pickle.PickleBuffer] = []
    body = io.BytesIO()
    pickler = pickle.Pickler(body, protocol=5, buffer_callback=buffers.append)
    pickler.fast = True  # no memo (deprecated, still supported)
    pickler.dump(obj)
    views = [b.raw() for b in buffers]
    out.write(_HEADER.pack(_MAGIC, body.tell(), len(views)))
    out.write(body.getbuffer())
    for view in views:
        out.write(_LENGTH.pack(view.nbytes))
        out.write(view)
    out.flush()


def read_frame(src: IO[bytes]) -> Any:
    """Read one frame (blocking); EOFError when the other side is gone."""
    magic, size, count = _HEADER.unpack(_read_exactly(src, _HEADER.size))
    if magic != _MAGIC or size > _MAX_FRAME or count > _MAX_BUFFERS:
        raise ProjectionError("the intake pipe is out of step (not a frame header)")
    body = _read_exactly(src, size)
    buffers = []
    for _ in range(count):
        (length,) = _LENGTH.unpack(_read_exactly(src, _LENGTH.size))
        if length > _MAX_FRAME:
            raise ProjectionError("the intake pipe is out of step (not a buffer length)")
        buffers.append(_read_exactly(src, length))
    try:
        return pickle.loads(body, buffers=buffers)
    except Exception as exc:
        raise ProjectionError(f"an unreadable frame on the intake pipe: {exc!r}") from exc


def _read_exactly(src: IO[bytes], size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = src.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise EOFError
        got += n
    return buf


# ------------------------------------------------------------------ the writer's side


class IntakeProcess:
    """The writer's handle on an intake process: start it, take batches, grant credit, stop.

    The pipes are read and written by blocking calls in threads (the writer's event loop
    serves NATS meanwhile): asyncio's pipe streams copied each batch twice and paused and
    resumed reading every 128 KiB (measured: ~15% of the writer's event loop).
    """

    # batches the intake may have sent and the writer not taken yet
    CREDIT = 3
    # how long start() waits for the intake to be bound to the feed (it imports, connects
    # and binds in ~0.5 s); past that, or when it fails, start() returns and the feed finds
    # out from the batches (or the failure) it reads
    READY_TIMEOUT = 15.0

    def __init__(self, spec: IntakeSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self._queue: asyncio.Queue[Batch | BaseException] = asyncio.Queue()
        self._reader: threading.Thread | None = None
        self._ready = asyncio.Event()
        # whether the last batch was a full one: the intake is reading a backlog
        self._backlog = False

    async def start(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root if not path else root + os.pathsep + path}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "projections.intake"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self._send(("spec", msgspec.json.encode(self.spec)))
        self._send(("credit", self.CREDIT))
        loop = asyncio.get_running_loop()
        self._reader = threading.Thread(
            target=self._read, args=(loop, self.proc), name="mvs-intake-reader", daemon=True
        )
        self._reader.start()
        # started means reading the log: the process's start (~0.5 s, mostly imports) is
        # not spent later, in the first catch-up, with the writer waiting for its batches
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), self.READY_TIMEOUT)

    def _send(self, obj: Any) -> None:
        # small frames the intake reads at once: the write does not block
        if self.proc is not None and self.proc.stdin is not None:
            write_frame(self.proc.stdin, obj)

    def _read(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        put = self._queue.put_nowait
        try:
            while True:
                frame = read_frame(proc.stdout)
                if frame[0] == "ready":
                    loop.call_soon_threadsafe(self._ready.set)
                    continue
                if frame[0] == "error":
                    raise ProjectionError(f"the projections' intake process failed: {frame[1]}")
                loop.call_soon_threadsafe(put, _batch(frame))
        except EOFError:
            code = proc.wait()
            if code != 0 or self.proc is not None:  # not a stop we asked for
                err = ProjectionError(f"the projections' intake process exited (code {code})")
                loop.call_soon_threadsafe(put, err)
        except Exception as exc:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(put, exc)
        finally:  # start() waits no longer: the failure is in the queue
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._ready.set)

    async def next(self, wait: bool, timeout: float) -> Batch | None:
        """The next batch; None if there is none within ``timeout``, or, unless ``wait``, if
        the log is read (the last batch was short) and none is here now.

        While a backlog is read, a batch on its way counts as there: returning None would
        tell the feed the log is read, and it would fold the shares it holds back.
        """
        if self._queue.empty() and not wait and not self._backlog:
            return None
        try:
            got = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            self._backlog = False
            return None
        if isinstance(got, BaseException):
            raise got
        self._backlog = got.size >= self.spec.batch
        with contextlib.suppress(OSError):  # a dead intake is reported by the reader
            self._send(("credit", 1))
        return got

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            write_frame(proc.stdin, ("stop",))
            proc.stdin.close()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, proc.wait), 5.0)
        except TimeoutError:
            proc.kill()
            await loop.run_in_executor(None, proc.wait)
        if self._reader is not None:
            await loop.run_in_executor(None, self._reader.join)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()


def _batch(frame: tuple[Any, ...]) -> Batch:
    _, last_seq, seqs, subjects, datas, shares = frame
    msgs = Columns(seqs, subjects, datas).messages()
    return Batch(
        last_seq, len(msgs),
        {
            name: Share(msgs if positions is None else [msgs[i] for i in positions], prepared)
            for name, (positions, prepared) in shares.items()
        },
    )


# ------------------------------------------------------------------ the intake's side


def _tidy() -> None:
    """Give back what laying out a backlog held (Arrow's pool keeps freed memory)."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    """End ``future`` (with ``outcome`` if that is an exception) unless it has ended."""
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


async def _intake(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    from mvs.bus import connect

    loop = asyncio.get_running_loop()
    spec = msgspec.json.decode(read_frame(stdin)[1], type=IntakeSpec)
    router = Router(
        {name: None if d is None else frozenset(d) for name, (_, _, d) in spec.runners.items()}
    )
    preparing = {
        name: proj
        for name, (pname, suffix, _) in spec.runners.items()
        if (proj := projection(pname, suffix)).prepares
    }
    credit = asyncio.Semaphore(0)
    stopped = loop.create_future()

    def control() -> None:
        """Take credit until the writer says stop or goes away (a thread: blocking reads)."""
        try:
            while (frame := read_frame(stdin))[0] == "credit":
                for _ in range(int(frame[1])):
                    loop.call_soon_threadsafe(credit.release)
        except (EOFError, OSError):
            pass  # the writer is gone
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, stopped, None)

    frames: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    broken = loop.create_future()

    def send() -> None:
        """Pickle and write the frames the pump lays out (a thread: blocking writes)."""
        try:
            while (frame := frames.get()) is not None:
                write_frame(stdout, frame)
        except Exception as exc:  # the writer is gone, or cannot take what we send
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, broken, exc)

    async def pump() -> None:
        """Fetch, route, lay out, hand over; the next batch is asked for before the layout
        of this one, so NATS delivers it meanwhile (measured: the fetch and the pickling were
        half of the intake's time when done one after the other)."""
        fetch = puller.fetch_columns
        fetching = asyncio.ensure_future(fetch(spec.batch, spec.idle_timeout))
        while True:
            await credit.acquire()
            got = await fetching
            if not got.seqs:
                _tidy()  # the log is read: a quiet moment to give memory back
            while not got.seqs:
                got = await fetch(spec.batch, spec.idle_timeout)
            fetching = asyncio.ensure_future(fetch(spec.batch, spec.idle_timeout))
            seqs, subjects, datas = got
            split = router.split(subjects)
            prepared = prepare_shares(got, split, preparing)
            frames.put((
                "batch", seqs[-1], seqs, subjects, datas,
                {name: (positions, prepared.get(name)) for name, positions in split.items()},
            ))

    # the writer is connected to that server: a short first try
    nc = await connect(spec.url, name="mvs-projections-intake", connect_timeout=2.0)
    puller = Puller(nc, EVENTS_STREAM, spec.durable)
    await puller.start()
    threading.Thread(target=control, name="mvs-intake-control", daemon=True).start()
    sender = threading.Thread(target=send, name="mvs-intake-send", daemon=True)
    sender.start()
    frames.put(("ready",))  # bound to the feed: the writer's start may return
    pumping = asyncio.create_task(pump())
    try:
        await asyncio.wait({pumping, stopped, broken}, return_when=asyncio.FIRST_COMPLETED)
        if broken.done():
            broken.result()  # the pipe's failure
        if pumping.done():
            pumping.result()  # the pump's failure
    finally:
        await cancel_and_wait(pumping)
        frames.put(None)
        await loop.run_in_executor(None, sender.join)
        with contextlib.suppress(Exception):
            await puller.stop()
            await nc.close()


def main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # nothing else may write to the frames' pipe
    sys.stdout = sys.stderr
    try:
        tasks.run(_intake(stdin, stdout))
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the writer is gone: nothing to tell it
    except Exception as exc:
        with contextlib.suppress(Exception):
            write_frame(stdout, ("error", f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    import gc

    from projections.runner import GC_THRESHOLD

    logging.basicConfig(level=logging.WARNING, format="intake: %(levelname)s %(message)s")
    gc.set_threshold(*GC_THRESHOLD)
    sys.exit(main())
