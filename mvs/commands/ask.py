"""``mvs ask "TEXT" [--json]``: one text request through the pipeline, with its route and timings.

With the system up (``mvs up``) the request goes to the running RequestCoordinator. Without
it, ``mvs ask`` runs the pipeline in this process (ModelManagerSuite, CacheManager and
RequestCoordinator on an embedded NATS server) and says so on stderr; memory context then
needs the running system (the memory stage shows as not ok).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import AsyncExitStack

import msgspec

from mvs import tasks
from mvs.bus import NatsEndpoint
from mvs.config import load_config
from mvs.errors import ServiceCallError
from mvs.flags import FlagStore
from mvs.rpc import ServiceClient
from mvs.service import Service, ServiceContext
from mvs.services.request_pipeline import TextReply, TextRequest
from mvs.settings import Settings
from mvs.supervisor import running_url
from streams.definitions import apply_streams

__all__ = ["ask_in_process", "ask_running", "format_reply", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="send a text request through the pipeline and show its route")
    p.add_argument("text", help="the request text")
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    p.add_argument("--session", default="cli", help="session id (flags are sticky per session)")
    p.add_argument("--user", default=None, help="user id")
    p.add_argument("--priority", type=int, default=5, help="0 most urgent .. 9 (default 5)")
    p.add_argument("--max-tokens", type=int, default=96, help="answer length limit")
    p.add_argument("--task-type", default=None, help="skip classification, e.g. simple_qa")
    p.add_argument("--no-cache", action="store_true", help="do not answer from the cache")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    p.add_argument("--local", action="store_true", help="run the pipeline in this process")
    p.set_defaults(func=run)


async def ask_running(url: str, req: TextRequest, *, timeout: float = 120.0) -> TextReply:
    """Ask the RequestCoordinator of a running system."""
    from mvs.bus import connect

    nc = await connect(url, name="mvs-ask")
    try:
        client = ServiceClient(nc, timeout=timeout)
        return await client.call("RequestCoordinator", "text", req, TextReply)
    finally:
        await nc.close()


async def ask_in_process(
    url: str, settings: Settings, req: TextRequest, *, timeout: float = 120.0
) -> TextReply:
    """Start the services a text request needs in this process, ask once, stop them."""
    from mvs.services.cache import CacheManager
    from mvs.services.model_manager import ModelManagerSuite
    from mvs.services.request_coordinator import RequestCoordinator

    config = load_config(settings.config_path)
    ctx = await ServiceContext.connect(url, process="ask", config=config)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(ctx.close)
        await apply_streams(ctx.js)
        ctx.flags = await FlagStore.open(
            ctx.js,
            events=ctx.events,
            defaults={k: v.fraction for k, v in config.feature_flags.items()},
        )
        for cls in (ModelManagerSuite, CacheManager, RequestCoordinator):
            service: Service = cls(ctx)
            await service.start()
            stack.push_async_callback(service.stop)
        client = ServiceClient(ctx.nc, timeout=timeout)
        reply = await client.call("RequestCoordinator", "text", req, TextReply)
        await ctx.events.flush()
        return reply
    raise AssertionError("unreachable")  # pragma: no cover - AsyncExitStack re-raises


def format_reply(reply: TextReply) -> str:
    """The answer, then the route and the latency of every stage."""
    route: str = reply.route
    if reply.fallback_from:
        route += f" (fell back from {reply.fallback_from}: {reply.reason})"
    elif reply.reason and reply.route != "cache":
        route += f" ({reply.reason})"
    # Inside the model: llama.cpp's own time (or the cloud exchange); without that figure, the
    # whole llm stage. A first request's model load counts as outside the model.
    llm_ms = reply.model_ms or sum(s.duration_ms for s in reply.stages if s.stage == "llm")
    lines = [
        reply.text or "(empty answer)",
        "",
        f"route:   {route}",
        f"task:    {reply.task_type or '-'}   model: {reply.model or '-'}   "
        f"memories used: {reply.memories_used}   request: {reply.request_id}",
        "stages:  " + " | ".join(
            f"{s.stage} {s.duration_ms:.1f} ms" + ("" if s.ok else " (degraded)")
            for s in reply.stages
        ),
        f"total:   {reply.latency_ms:.1f} ms (model {llm_ms:.1f} ms, "
        f"outside the model {max(0.0, reply.latency_ms - llm_ms):.1f} ms)",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    req = TextRequest(
        text=args.text,
        session_id=args.session or None,
        user_id=args.user,
        priority=args.priority,
        max_tokens=args.max_tokens,
        task_type=args.task_type,
        use_cache=not args.no_cache,
    )
    url = None if args.local else running_url(settings)
    reply: TextReply | None = None
    if url is not None:
        try:
            reply = tasks.run(ask_running(url, req, timeout=args.timeout))
        except ServiceCallError as exc:
            if exc.code != "503":
                raise
            print(f"mvs ask: {exc}; running the pipeline in this process", file=sys.stderr)
    if reply is None:
        if not args.local:
            print("mvs ask: MVS is not running (`mvs up`); running the pipeline in this process",
                  file=sys.stderr)
        with NatsEndpoint(settings) as endpoint:
            reply = tasks.run(ask_in_process(endpoint.url, settings, req, timeout=args.timeout))
    if args.json:
        print(msgspec.json.encode(reply).decode())
    else:
        print(format_reply(reply))
    return 0
