from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from mvs.bus import NatsEndpoint, connect
from mvs.errors import NatsUnavailable
from mvs.natsserver import NatsServer
from mvs.settings import load_settings


def test_embedded_server_starts_with_jetstream_and_stops(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "nats", port=0)
    url = server.start()
    try:

        async def check() -> None:
            nc = await connect(url)
            info = await nc.jetstream().account_info()
            assert info.limits is not None
            await nc.close()

        asyncio.run(check())
    finally:
        server.stop()
    assert server.pid is None
    with pytest.raises(NatsUnavailable):
        asyncio.run(connect(url, connect_timeout=0.5))


def test_port_taken_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = NatsServer(store_dir=tmp_path / "nats", port=port)
        with pytest.raises(NatsUnavailable, match=f"port {port}.*already taken"):
            server.start()


def test_missing_binary_gives_a_clear_error(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "nats", port=0, binary=tmp_path / "no-such-binary")
    with pytest.raises((NatsUnavailable, FileNotFoundError)):
        server.start()


def test_unreachable_server_is_named(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NatsUnavailable, match=f"127.0.0.1:{port} is unreachable"):
        asyncio.run(connect(f"nats://127.0.0.1:{port}", connect_timeout=0.5))


def test_server_without_jetstream_is_reported(tmp_path: Path) -> None:
    import subprocess

    from mvs.natsserver import find_nats_server_binary

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(find_nats_server_binary()), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                import time

                time.sleep(0.05)
        with pytest.raises(NatsUnavailable, match="JetStream is not enabled"):
            asyncio.run(connect(f"nats://127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.wait()


def test_endpoint_shares_a_running_embedded_server(tmp_path: Path) -> None:
    settings = load_settings({"MVS_HOME": str(tmp_path / "home"), "MVS_NATS_PORT": "0"})
    with NatsEndpoint(settings, port=0) as first:
        assert first.embedded
        with NatsEndpoint(settings, port=0) as second:
            assert not second.embedded
            assert second.url == first.url
    assert not settings.runtime_file.exists()
