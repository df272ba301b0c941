"""eventsourcing's own recorder contracts, run against mvs.eventstore on a real nats-server.

The test case classes come unchanged from ``eventsourcing.tests.persistence``; these
subclasses only supply what the classes ask for (``create_recorder``, the expected classes,
the environment). Every test gets a fresh application name, hence fresh streams, so
notification ids start at 1 as the contracts expect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment

from mvs.eventstore import (
    DuckDBTrackingRecorder,
    Factory,
    JetStreamAggregateRecorder,
    JetStreamApplicationRecorder,
    JetStreamProcessRecorder,
)
from mvs.natsserver import NatsServer


@pytest.fixture(scope="module")
def es_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path_factory.mktemp("es-nats"), port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def es_bind(request: pytest.FixtureRequest, es_server: NatsServer, tmp_path: Path) -> None:
    """Give the unittest-style test its server URL and a temp folder."""
    request.instance.nats_url = es_server.url
    request.instance.tmp_path = tmp_path


class _FactoryMixin:
    """One factory per test, named after a fresh application, closed after the test."""

    nats_url: str
    tmp_path: Path
    _factory: Factory | None = None

    def factory_env(self) -> Environment:
        return Environment(
            name=f"App{uuid.uuid4().hex[:12]}",
            env={
                "PERSISTENCE_MODULE": "mvs.eventstore",
                "MVS_NATS_URL": self.nats_url,
                "MVS_ES_DUCKDB_PATH": str(self.tmp_path / "tracking.duckdb"),
                "MVS_ES_TIMEOUT": "20",
            },
        )

    def es_factory(self) -> Factory:
        if self._factory is None:
            self._factory = Factory(self.factory_env())
        return self._factory

    def tearDown(self) -> None:
        if self._factory is not None:
            self._factory.close()
            self._factory = None
        super().tearDown()  # type: ignore[misc]  # the TestCase's (and its factory's) tearDown


@pytest.mark.usefixtures("es_bind")
class TestAggregateRecorder(_FactoryMixin, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.es_factory().aggregate_recorder()


@pytest.mark.usefixtures("es_bind")
class TestSnapshotRecorder(_FactoryMixin, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.es_factory().aggregate_recorder(purpose="snapshots")


@pytest.mark.usefixtures("es_bind")
class TestApplicationRecorder(_FactoryMixin, ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return self.es_factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


@pytest.mark.usefixtures("es_bind")
class TestNonInterleavingNotificationIds(_FactoryMixin, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.es_factory().application_recorder()


@pytest.mark.usefixtures("es_bind")
class TestProcessRecorder(_FactoryMixin, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.es_factory().process_recorder()


@pytest.mark.usefixtures("es_bind")
class TestDuckDBTrackingRecorder(TrackingRecorderTestCase):
    tmp_path: Path

    def create_recorder(self) -> TrackingRecorder:
        recorder = DuckDBTrackingRecorder(self.tmp_path / f"{uuid.uuid4().hex}.duckdb")
        recorder.create_table()
        self.addCleanup(recorder.close)
        return recorder


class CustomTrackingRecorder(DuckDBTrackingRecorder):
    pass


@pytest.mark.usefixtures("es_bind")
class TestFactory(_FactoryMixin, InfrastructureFactoryTestCase[Factory]):
    def setUp(self) -> None:
        self.env = self.factory_env()
        super().setUp()

    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return JetStreamAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return JetStreamApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return DuckDBTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return JetStreamProcessRecorder
