"""Shared real components for the LLM tests: the SmolLM2 model and an OpenAI-compatible server.

The server is llama-cpp-python's own (``python -m llama_cpp.server``, the ``[server]`` extra)
serving the same small GGUF model: a real HTTP endpoint for the router's cloud path.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from mvs.models.backends import DEFAULT_MODELS, load_model, resolve_path
from mvs.models.llama import LlamaChatModel

LLM_SPEC = msgspec.structs.replace(DEFAULT_MODELS[0], options={"n_ctx": 1024})
# The test server wants this bearer key, as a real cloud endpoint would.
API_KEY = "mvs-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_url() -> str:
    """An http URL on which nothing listens (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="module")
def llama_model() -> Iterator[LlamaChatModel]:
    model = load_model(LLM_SPEC)
    assert isinstance(model, LlamaChatModel)
    yield model
    model.close()


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real OpenAI-compatible server."""
    pytest.importorskip("uvicorn", reason="llama-cpp-python[server] extra not installed")
    port = free_port()
    log = Path(tmp_path_factory.mktemp("llama-server")) / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(resolve_path(LLM_SPEC)),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "1024", "--n_threads", "1", "--api_key", API_KEY,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ping = urllib.request.Request(
                    f"{base}/models", headers={"Authorization": f"Bearer {API_KEY}"}
                )
                with urllib.request.urlopen(ping, timeout=2) as resp:
                    json.load(resp)
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"llama_cpp.server did not start: {log.read_text()}"
                    ) from exc
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
