from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import psutil
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_a_server_whose_owner_is_killed_stops_too(tmp_path: Path) -> None:
    """A test process killed by a timeout (or a supervisor killed with SIGKILL) leaves no
    nats-server behind on its port and store."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mvs.natsserver import NatsServer\n"
        "s = NatsServer(store_dir=Path(sys.argv[1]), port=0)\n"
        "s.start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "nats")],
                             stdout=subprocess.PIPE, text=True)
    server_pid = 0
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        assert psutil.pid_exists(server_pid)
        owner.kill()  # no cleanup code of the owner runs
        owner.wait()
        gone, _ = psutil.wait_procs([psutil.Process(server_pid)], timeout=15)
        assert gone, "nats-server outlived the process that started it"
    finally:
        owner.kill()
        with contextlib.suppress(psutil.Error, ValueError):
            if server_pid:
                psutil.Process(server_pid).kill()
