"""Request round trips: raw nats-py request/reply against the MVS service framework.

Both run in the same process against the same embedded nats-server, one request at a time:

- ``raw``: a bare ``nc.subscribe`` echo answered with ``msg.respond`` (the floor);
- ``framework``: a :class:`mvs.service.Service` endpoint with typed msgspec decode/encode,
  metrics, the ``service.call.v1`` event (background, batched) and a
  :class:`~mvs.rpc.ServiceClient` decoding the reply;
- ``framework_json``: the same endpoint called with a JSON body (as ``nats req`` would).

Printed: p50/p95/mean per path and the framework's overhead over raw (p50 and p95 ratio and
difference in ms). The pipeline figures (RequestCoordinator without a model, and the share of
latency outside the local LLM) belong beside these, measured with :func:`measure` too.

    .venv/bin/python -m benchmarks.bench_requests [--quick] [-n N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec

from mvs.bus import connect
from mvs.natsserver import NatsServer
from mvs.service import Service, ServiceClient, ServiceContext, endpoint
from streams.definitions import apply_streams

__all__ = ["Timing", "main", "measure"]


class Ask(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    session_id: str = "bench"


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    text: str


class EchoService(Service):
    """Answers with the text it got."""

    name = "BenchEcho"

    @endpoint("echo", request=Ask, reply=Answer)
    async def echo(self, req: Ask) -> Answer:
        return Answer(text=req.text)


class Timing(msgspec.Struct, frozen=True):
    label: str
    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float


def _timing(label: str, samples: list[float]) -> Timing:
    ordered = sorted(samples)
    return Timing(
        label,
        len(ordered),
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
        statistics.fmean(ordered) * 1000,
    )


async def measure(label: str, call: Callable[[], Awaitable[object]], n: int) -> Timing:
    """Time ``n`` sequential calls after a short warm-up."""
    for _ in range(min(50, n)):
        await call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return _timing(label, samples)


async def _run(url: str, n: int) -> list[Timing]:
    nc = await connect(url, name="bench-raw")
    ctx = await ServiceContext.connect(url, process="bench")
    await apply_streams(ctx.js)

    async def echo(msg: object) -> None:
        await msg.respond(msg.data)  # type: ignore[attr-defined]

    await nc.subscribe("bench.raw", cb=echo)
    await nc.flush()  # the server holds the subscription before another connection asks
    svc = EchoService(ctx)
    await svc.start()
    client_nc = await connect(url, name="bench-client")
    client = ServiceClient(client_nc)
    body = msgspec.msgpack.encode(Ask(text="what time is it?"))
    json_body = msgspec.json.encode(Ask(text="what time is it?"))
    try:
        results = [
            await measure("raw", lambda: client_nc.request("bench.raw", body, timeout=5), n),
            await measure(
                "framework",
                lambda: client.call("BenchEcho", "echo", Ask(text="what time is it?"), Answer),
                n,
            ),
            await measure(
                "framework_json",
                lambda: client_nc.request("mvs.svc.BenchEcho.echo", json_body, timeout=5),
                n,
            ),
        ]
    finally:
        await svc.stop()
        await ctx.close()
        await client_nc.close()
        await nc.close()
    return results


def _report(results: list[Timing]) -> None:
    print(f"{'path':<16} {'n':>6} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9}")
    for t in results:
        print(f"{t.label:<16} {t.n:>6} {t.p50_ms:>9.3f} {t.p95_ms:>9.3f} {t.mean_ms:>9.3f}")
    raw = results[0]
    for t in results[1:]:
        d50, d95 = t.p50_ms - raw.p50_ms, t.p95_ms - raw.p95_ms
        print(
            f"{t.label} vs raw: p50 x{t.p50_ms / raw.p50_ms:.2f} (+{d50:.3f} ms), "
            f"p95 x{t.p95_ms / raw.p95_ms:.2f} (+{d95:.3f} ms)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_requests", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    parser.add_argument("-n", type=int, default=None, help="requests per path")
    args = parser.parse_args(argv)
    n = args.n or (300 if args.quick else 3000)
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats", port=0)
        url = server.start()
        try:
            results = asyncio.run(_run(url, n))
        finally:
            server.stop()
    _report(results)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
