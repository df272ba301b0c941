"""Laws and behaviours of the JetStream event store beyond eventsourcing's own contracts.

Property tests against a real nats-server: any split of appends reads back the same; an
append whose ack is lost and is retried is stored exactly once; of concurrent writers of the
same aggregate version exactly one wins. Lost acks are produced by dropping the ack of a
real publish (the server stores the events; the recorder is told it timed out).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from unittest.mock import patch
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import DataError, IntegrityError, OperationalError, StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mvs.eventstore_append as append_module
from mvs.errors import ConfigError
from mvs.eventstore import Factory, JetStreamApplicationRecorder
from mvs.eventstore_runtime import NatsRuntime, StoreNames
from mvs.natsserver import NatsServer

LAW_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path_factory.mktemp("store-nats"), port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def runtime(store_server: NatsServer) -> Iterator[NatsRuntime]:
    rt = NatsRuntime(store_server.url, timeout=20.0)
    try:
        yield rt
    finally:
        rt.close()


def _recorder(runtime: NatsRuntime, app: str | None = None) -> JetStreamApplicationRecorder:
    recorder = JetStreamApplicationRecorder(
        runtime, StoreNames(app or f"Law{uuid.uuid4().hex[:12]}"), contiguous=True
    )
    recorder.create_table()
    return recorder


def _stored_sequence(owners: list[int], states: list[bytes]) -> list[StoredEvent]:
    """Events of up to three aggregates, in the given order, versions counting from 1."""
    ids: list[UUID | str] = [uuid4(), f"str id/{uuid.uuid4().hex} é.*>", uuid4()]
    versions: dict[int, int] = {}
    out = []
    for owner, state in zip(owners, states, strict=False):
        versions[owner] = versions.get(owner, 0) + 1
        out.append(StoredEvent(ids[owner], versions[owner], f"topic{owner}", state))
    return out


def _chunks(events: list[StoredEvent], sizes: list[int]) -> list[list[StoredEvent]]:
    out, i = [], 0
    for size in sizes * (len(events) + 1):
        if i >= len(events):
            break
        out.append(events[i : i + size])
        i += size
    return out


sequences = st.lists(st.integers(0, 2), min_size=1, max_size=30).flatmap(
    lambda owners: st.tuples(
        st.just(owners),
        st.lists(st.binary(max_size=40), min_size=len(owners), max_size=len(owners)),
    )
)
splits = st.lists(st.integers(1, 7), min_size=1, max_size=6)


def _check_reads_back(recorder: JetStreamApplicationRecorder, events: list[StoredEvent]) -> None:
    notes = recorder.select_notifications(start=None, limit=1000)
    assert [n.id for n in notes] == list(range(1, len(events) + 1))
    assert [(n.originator_id, n.originator_version, n.topic, n.state) for n in notes] == [
        (e.originator_id, e.originator_version, e.topic, e.state) for e in events
    ]
    for oid in {e.originator_id for e in events}:
        assert recorder.select_events(oid) == [e for e in events if e.originator_id == oid]


@LAW_SETTINGS
@given(seq=sequences, sizes=splits)
def test_any_split_of_inserts_reads_back_the_same_sequence(
    runtime: NatsRuntime, seq: tuple[list[int], list[bytes]], sizes: list[int]
) -> None:
    events = _stored_sequence(*seq)
    recorder = _recorder(runtime)
    ids: list[int] = []
    for chunk in _chunks(events, sizes):
        ids.extend(recorder.insert_events(chunk) or [])
    assert ids == list(range(1, len(events) + 1))
    _check_reads_back(recorder, events)


class _DropAcks:
    """Let the server store an append but lose its ack, for the appends numbered in ``drop``."""

    def __init__(self, drop: set[int]) -> None:
        self.drop = drop
        self.calls = 0

    def wrap(self, real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def publish(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            ack = await real(*args, **kwargs)
            if self.calls in self.drop:
                raise TimeoutError
            return ack

        return publish


@LAW_SETTINGS
@given(seq=sequences, sizes=splits, drop=st.sets(st.integers(1, 12), max_size=6))
def test_an_append_retried_after_a_lost_ack_is_stored_once(
    runtime: NatsRuntime, seq: tuple[list[int], list[bytes]], sizes: list[int], drop: set[int]
) -> None:
    events = _stored_sequence(*seq)
    recorder = _recorder(runtime)
    dropper = _DropAcks(drop)
    ids: list[int] = []
    chunks = _chunks(events, sizes)
    with (
        patch.object(append_module, "publish_one", dropper.wrap(append_module.publish_one)),
        patch.object(append_module, "publish_atomic", dropper.wrap(append_module.publish_atomic)),
    ):
        for chunk in chunks:
            ids.extend(recorder.insert_events(chunk) or [])
    if 1 in drop:  # at least the first append was retried
        assert dropper.calls > len(chunks)
    assert ids == list(range(1, len(events) + 1))
    _check_reads_back(recorder, events)


@LAW_SETTINGS
@given(writers=st.integers(2, 6), rounds=st.integers(1, 3), batch=st.integers(1, 3))
def test_of_concurrent_writers_of_one_aggregate_version_exactly_one_wins(
    runtime: NatsRuntime, writers: int, rounds: int, batch: int
) -> None:
    app = f"Race{uuid.uuid4().hex[:12]}"
    # Separate recorders: each remembers positions on its own, so the server decides.
    recorders = [_recorder(runtime, app) for _ in range(writers)]
    oid = uuid4()
    version = 0
    for _ in range(rounds):
        start = threading.Barrier(writers)
        outcomes: list[str] = []

        def write(
            w: int, first: int, start: threading.Barrier, outcomes: list[str]
        ) -> None:
            evs = [StoredEvent(oid, first + k, "t", f"w{w}".encode()) for k in range(batch)]
            start.wait()
            try:
                recorders[w].insert_events(evs)
                outcomes.append(f"won{w}")
            except IntegrityError:
                outcomes.append("lost")

        threads = [
            threading.Thread(target=write, args=(w, version + 1, start, outcomes))
            for w in range(writers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o.startswith("won")]
        assert len(winners) == 1 and outcomes.count("lost") == writers - 1
        stored = recorders[0].select_events(oid, gt=version)
        assert [e.state for e in stored] == [f"w{winners[0][3:]}".encode()] * batch
        version += batch


def test_streams_deny_delete_and_purge_and_allow_atomic_and_direct(runtime: NatsRuntime) -> None:
    recorder = _recorder(runtime)

    async def info() -> Any:
        return await runtime.nc.jetstream().stream_info(recorder.names.stream)

    config = runtime.call(info(), doing="stream info").config
    assert config.deny_delete and config.deny_purge
    assert config.allow_atomic and config.allow_direct
    assert config.subjects == [recorder.names.wildcard]


def test_a_version_gap_is_refused_but_snapshots_may_skip(runtime: NatsRuntime) -> None:
    recorder = _recorder(runtime)
    oid = uuid4()
    recorder.insert_events([StoredEvent(oid, 1, "t", b"")])
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent(oid, 3, "t", b"")])
    snapshots = Factory.aggregate_recorder_class(
        runtime, StoreNames(recorder.names.app, "snapshots"), contiguous=False
    )
    snapshots.create_table()
    snapshots.insert_events([StoredEvent(oid, 5, "s", b"")])
    snapshots.insert_events([StoredEvent(oid, 10, "s", b"")])
    with pytest.raises(IntegrityError):
        snapshots.insert_events([StoredEvent(oid, 10, "s", b"again")])
    assert [e.originator_version for e in snapshots.select_events(oid, lte=9)] == [5]


def test_a_writer_that_read_an_old_version_conflicts(runtime: NatsRuntime) -> None:
    app = f"Stale{uuid.uuid4().hex[:12]}"
    first, second = _recorder(runtime, app), _recorder(runtime, app)
    oid = uuid4()
    first.insert_events([StoredEvent(oid, 1, "t", b"")])
    assert len(second.select_events(oid)) == 1  # second now remembers version 1
    first.insert_events([StoredEvent(oid, 2, "t", b"first")])
    with pytest.raises(IntegrityError):
        second.insert_events([StoredEvent(oid, 2, "t", b"second")])
    # A writer that never read the aggregate still appends after what is stored.
    third = _recorder(runtime, app)
    assert third.insert_events([StoredEvent(oid, 3, "t", b"third")]) == [3]


def test_more_events_than_one_atomic_batch_holds_is_a_data_error(runtime: NatsRuntime) -> None:
    recorder = _recorder(runtime)
    oid = uuid4()
    with pytest.raises(DataError):
        recorder.insert_events([StoredEvent(oid, v, "t", b"") for v in range(1, 1002)])


def test_the_factory_names_the_missing_url_setting() -> None:
    with pytest.raises(ConfigError, match="MVS_NATS_URL"):
        Factory({"PERSISTENCE_MODULE": "mvs.eventstore"})


class Counter(Aggregate):
    @event("Created")
    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    @event("Incremented")
    def increment(self, by: int) -> None:
        self.count += by


class Counters(Application[UUID]):
    snapshotting_intervals = {Counter: 3}


def test_an_eventsourcing_application_runs_on_the_jetstream_store(
    store_server: NatsServer, tmp_path: Any
) -> None:
    env = {
        "PERSISTENCE_MODULE": "mvs.eventstore",
        "MVS_NATS_URL": store_server.url,
        "MVS_ES_DUCKDB_PATH": str(tmp_path / "tracking.duckdb"),
        "IS_SNAPSHOTTING_ENABLED": "yes",
    }
    app = Counters(env={**env, "APPLICATION_NAME": f"Counters{uuid.uuid4().hex[:8]}"})
    try:
        counter = Counter("kitchen")
        for by in (1, 2, 3, 4):
            counter.increment(by)
        app.save(counter)
        loaded: Counter = app.repository.get(counter.id)
        assert (loaded.name, loaded.count, loaded.version) == ("kitchen", 10, 5)
        assert app.repository.get(counter.id, version=2).count == 1
        loaded.increment(5)
        app.save(loaded)
        stale: Counter = app.repository.get(counter.id, version=5)
        stale.increment(100)
        with pytest.raises(IntegrityError):
            app.save(stale)
        assert app.repository.get(counter.id).count == 15
        assert app.recorder.max_notification_id() == 6
        assert app.snapshots is not None
        assert list(app.snapshots.get(counter.id))
    finally:
        app.close()


def test_long_and_odd_string_ids_come_back_from_notifications(runtime: NatsRuntime) -> None:
    recorder = _recorder(runtime)
    long_id = "memory/" + "ü.* >" * 60  # escapes to more than a subject token holds: hashed
    odd_id = "a.b c*>%"
    recorder.insert_events([StoredEvent(long_id, 1, "t", b"1"), StoredEvent(odd_id, 1, "t", b"2")])
    notes = recorder.select_notifications(None, 10)
    assert [n.originator_id for n in notes] == [long_id, odd_id]
    assert recorder.select_events(long_id)[0].state == b"1"
    with pytest.raises(DataError):
        recorder.insert_events([StoredEvent(long_id + "\n", 1, "t", b"")])


def test_application_names_map_to_distinct_valid_streams_and_subjects() -> None:
    names = [StoreNames(app) for app in ("Foo", "foo", "my app.v2", "my_app_v2")]
    assert [n.stream for n in names][:2] == ["MVS_ES_Foo", "MVS_ES_foo"]
    assert len({n.stream for n in names}) == len({n.prefix for n in names}) == 4
    for n in names:
        assert not set(" .*>") & set(n.stream)
        assert n.wildcard == f"{n.prefix}.>" and " " not in n.prefix
    assert StoreNames("Foo", "snapshots").stream == "MVS_ES_Foo_snapshots"


def test_a_recorder_whose_server_is_gone_raises_operational_error(tmp_path: Any) -> None:
    server = NatsServer(store_dir=tmp_path / "nats", port=0)
    env = {"MVS_NATS_URL": server.start(), "MVS_ES_TIMEOUT": "1"}
    factory = Factory(env)
    try:
        recorder = factory.application_recorder()
        oid = uuid4()
        recorder.insert_events([StoredEvent(oid, 1, "t", b"")])
        server.stop()
        with pytest.raises(OperationalError):
            recorder.insert_events([StoredEvent(oid, 2, "t", b"")])
        with pytest.raises(OperationalError):
            recorder.select_events(oid)
    finally:
        factory.close()
        server.stop()
    with pytest.raises(OperationalError, match="closed"):
        recorder.select_events(oid)


def test_a_runtime_nobody_closed_is_closed_at_interpreter_exit(
    store_server: NatsServer,
) -> None:
    import mvs.eventstore_runtime as runtime_module

    left_open = NatsRuntime(store_server.url, timeout=5.0)
    closed_first = NatsRuntime(store_server.url, timeout=5.0)
    closed_first.close()
    assert left_open in runtime_module._OPEN and closed_first not in runtime_module._OPEN
    # What atexit runs: a client left to outlive its server would retry it for ever.
    runtime_module._close_open_runtimes()
    assert left_open.closed and left_open.nc.is_closed
    assert left_open not in runtime_module._OPEN
