"""Fixtures that start real components: nats-server on a free loopback port, temp stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mvs.natsserver import NatsServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream, its own store, on a port it picked itself."""
    server = NatsServer(store_dir=tmp_path / "nats", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def legacy_samples() -> Path:
    path = SHARED / "legacy" / "samples"
    if not path.is_dir():
        pytest.skip(f"legacy samples not found at {path}")
    return path
