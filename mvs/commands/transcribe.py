"""``mvs transcribe FILE.wav [--language pt]``: speech to text with STTService."""

from __future__ import annotations

import argparse
from pathlib import Path

from mvs.commands.speak import call_speech_service
from mvs.errors import ConfigError
from mvs.settings import Settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="speech to text (STTService) of a WAV file")
    p.add_argument("file", type=Path, help="a WAV file (or raw PCM16 with --rate)")
    p.add_argument("--language", default=None, help="en (default), or a Whisper code: pt, de...")
    p.add_argument("--rate", type=int, default=None, help="the file is raw PCM16 at this rate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mvs.services.stt import TranscribeReply, TranscribeRequest

    try:
        audio = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    req = TranscribeRequest(
        audio=audio, format="pcm16" if args.rate else "wav", sample_rate=args.rate or 16000,
        language=args.language,
    )
    reply = call_speech_service(settings, "STTService", "transcribe", req, TranscribeReply)
    print(reply.text)
    print(f"({reply.language}, {reply.duration:.2f} s of audio, {reply.model}, "
          f"{reply.model_ms:.0f} ms)")
    return 0
