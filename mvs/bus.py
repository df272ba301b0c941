"""Connecting to NATS: the embedded server or the one named by ``MVS_NATS_URL``.

:class:`NatsEndpoint` decides which server a command talks to: an explicit URL, else an
embedded server that another ``mvs`` process already runs on the same data folder, else a new
embedded server owned by this process. :func:`connect` opens a client and checks JetStream.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from mvs.errors import NatsUnavailable
from mvs.natsclient import MvsClient
from mvs.natsserver import NatsServer
from mvs.settings import Settings

__all__ = ["NatsEndpoint", "connect", "jetstream"]


async def connect(
    url: str, *, name: str = "mvs", connect_timeout: float = 5.0
) -> MvsClient:
    """Connect to ``url`` and check that JetStream answers; errors name the server."""
    # Once connected the client reconnects for ever; the first connection is bounded here
    # (nats-py would otherwise retry a dead URL without end).
    try:
        nc = MvsClient()
        # nats-py annotates the two times as int; it uses them as (float) seconds
        options: dict[str, Any] = {
            "name": name,
            "connect_timeout": connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
        }
        await asyncio.wait_for(nc.connect(url, **options), timeout=connect_timeout * 2)
    except (OSError, nats.errors.NoServersError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise NatsUnavailable(f"NATS server {url} is unreachable: {reason}") from exc
    try:
        await nc.jetstream().account_info()
    except (
        ServiceUnavailableError,
        nats.errors.NoRespondersError,
        nats.errors.TimeoutError,
    ) as exc:
        await nc.close()
        raise NatsUnavailable(
            f"JetStream is not enabled on NATS server {url}: start it with -js "
            "(or a 'jetstream {}' block in its config)"
        ) from exc
    return nc


def jetstream(nc: Client) -> JetStreamContext:
    return nc.jetstream(timeout=10.0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NatsEndpoint:
    """The NATS server a command should use, started here only when none is running.

    Use as a context manager; ``url`` is valid inside. An embedded server started here is
    advertised in ``settings.runtime_file`` so that other ``mvs`` commands on the same data
    folder share it instead of starting a second server on the same store.
    """

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.settings = settings
        self._port = settings.nats_port if port is None else port
        self.server: NatsServer | None = None
        self.url = ""

    @property
    def embedded(self) -> bool:
        return self.server is not None

    def __enter__(self) -> NatsEndpoint:
        if self.settings.nats_url:
            self.url = self.settings.nats_url
            return self
        shared = self._running_url()
        if shared:
            self.url = shared
            return self
        self.server = NatsServer(
            store_dir=self.settings.jetstream_dir,
            port=self._port,
            sync_always=self.settings.nats_sync_always,
        )
        self.url = self.server.start()
        self._advertise()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            self.settings.runtime_file.unlink(missing_ok=True)

    def _running_url(self) -> str | None:
        path: Path = self.settings.runtime_file
        try:
            info = json.loads(path.read_text())
            pid, url = int(info["pid"]), str(info["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return url if _pid_alive(pid) else None

    def _advertise(self) -> None:
        assert self.server is not None
        path = self.settings.runtime_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self.server.pid, "owner": os.getpid(), "url": self.url}))
        tmp.replace(path)
