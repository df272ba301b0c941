"""The ``mvs`` command line: parses, loads settings, calls library code.

Each subcommand lives in a module under :mod:`mvs.commands` that defines
``register(subparsers)``; the parser sets ``func(args, settings) -> int`` for the command.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from mvs import commands
from mvs.errors import MvsError
from mvs.settings import load_settings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvs", description="MVS: an event-sourced runtime for a local voice assistant"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        code = int(args.func(args, settings) or 0)
    except MvsError as exc:
        print(f"mvs {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
