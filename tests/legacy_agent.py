"""A real ZeroMQ REP "legacy agent" for tests: speaks the legacy envelope on a loopback port.

It runs in a thread with its own socket, answers through ``handler(envelope) -> reply``, keeps
every envelope it received, and can go silent (receive, never answer) or be stopped and
started again on the same port, which is how a legacy agent fails in the field.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import zmq

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def echo_handler(envelope: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "received": envelope}


class LegacyAgent:
    def __init__(self, handler: Handler = echo_handler, *, port: int = 0) -> None:
        self.handler = handler
        self.port = port
        self.received: list[dict[str, Any]] = []
        self.silent = threading.Event()
        self.awake = threading.Event()  # set once a silent agent listens again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._ctx = zmq.Context()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> LegacyAgent:
        self._stop.clear()
        self._ready.clear()
        if self.port:
            sock = self._bound_socket()
        else:
            sock = self._ctx.socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            self.port = sock.bind_to_random_port("tcp://127.0.0.1")
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._ctx.term()

    def _bound_socket(self) -> zmq.Socket[bytes]:
        # ZeroMQ releases a closed socket's port in its I/O thread: retry the bind briefly.
        for _ in range(250):
            sock = self._ctx.socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.bind(self.address)
                return sock
            except zmq.ZMQError:
                sock.close(linger=0)
                self._stop.wait(0.02)
        raise RuntimeError(f"cannot bind {self.address} again")

    def _serve(self, sock: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not dict(poller.poll(20)):
                    continue
                raw = sock.recv()
                try:
                    envelope = json.loads(raw)
                except ValueError:
                    sock.send(json.dumps({"status": "error", "error": "invalid JSON"}).encode())
                    continue
                self.received.append(envelope)
                if self.silent.is_set():
                    # Never answer: this REP socket is now stuck, as a hung agent's would be;
                    # make a fresh one so the agent can answer again when it wakes up.
                    while self.silent.is_set() and not self._stop.is_set():
                        self._stop.wait(0.02)
                    sock.close(linger=0)
                    sock = self._bound_socket()
                    self.awake.set()
                    poller = zmq.Poller()
                    poller.register(sock, zmq.POLLIN)
                    continue
                sock.send(json.dumps(self.handler(envelope), default=str).encode())
        finally:
            sock.close(linger=0)
