"""``mvs speak "TEXT" -o out.wav``: text to speech with TTSService.

With the system up the running TTSService speaks; without it the service runs in this process
on the embedded NATS server (the voice loads from its package). :func:`call_speech_service`
is shared by ``mvs transcribe`` and ``mvs translate``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from mvs import tasks
from mvs.settings import Settings

__all__ = ["call_speech_service", "register"]

Rep = TypeVar("Rep", bound=msgspec.Struct)

# service name -> "module:Class" of the service a command may run in-process
_LOCAL = {
    "TTSService": "mvs.services.tts:TTSService",
    "STTService": "mvs.services.stt:STTService",
    "TranslationService": "mvs.services.translation:TranslationService",
}


async def _call(url: str, settings: Settings, service: str, action: str, req: Any,
                reply: type[Rep], *, local: bool, timeout: float) -> Rep:
    import importlib

    from mvs.rpc import ServiceClient
    from mvs.service import ServiceContext
    from streams.definitions import apply_streams

    ctx = await ServiceContext.connect(url, process=f"cli-{service}")
    try:
        svc = None
        if local:
            await apply_streams(ctx.js)
            ctx.extras["settings"] = settings
            module, _, cls = _LOCAL[service].partition(":")
            svc = getattr(importlib.import_module(module), cls)(ctx)
            await svc.start()
        try:
            return await ServiceClient(ctx.nc, timeout=timeout).call(service, action, req, reply)
        finally:
            if svc is not None:
                await svc.stop()
    finally:
        await ctx.close()


def call_speech_service(settings: Settings, service: str, action: str, req: Any,
                        reply: type[Rep], *, timeout: float = 120.0) -> Rep:
    """Ask the running ``service``, or run it here for one call when MVS is not up."""
    from mvs.bus import NatsEndpoint
    from mvs.errors import ServiceCallError
    from mvs.supervisor import running_url

    url = running_url(settings)
    if url is not None:
        try:
            return tasks.run(_call(url, settings, service, action, req, reply,
                                   local=False, timeout=timeout))
        except ServiceCallError as exc:
            if exc.code != "503":
                raise
    print(f"mvs: {service} is not running; running it in this process", file=sys.stderr)
    with NatsEndpoint(settings) as endpoint:
        return tasks.run(_call(endpoint.url, settings, service, action, req, reply,
                               local=True, timeout=timeout))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("speak", help="text to speech (TTSService): write a WAV file")
    p.add_argument("text", help="what to say")
    p.add_argument("-o", "--output", type=Path, default=Path("speech.wav"), help="WAV file")
    p.add_argument("--length-scale", type=float, default=None, help=">1 slower, <1 faster")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mvs.services.tts import SynthesizeReply, SynthesizeRequest

    req = SynthesizeRequest(text=args.text, length_scale=args.length_scale)
    reply = call_speech_service(settings, "TTSService", "synthesize", req, SynthesizeReply)
    args.output.write_bytes(reply.audio)
    print(f"{args.output}: {reply.duration:.2f} s at {reply.sample_rate} Hz "
          f"({reply.voice}, {reply.model_ms:.0f} ms)")
    return 0
