"""Run every ``benchmarks/bench_*.py`` module's ``main``, with ``--quick`` unless told otherwise.

    python -m benchmarks                    # all, quick
    python -m benchmarks --full             # all, full size
    python -m benchmarks eventstore         # only bench_eventstore (quick)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _run_main(main: Callable[..., object], name: str, argv: list[str]) -> int:
    """Call ``main(argv)``, or ``main()`` with ``sys.argv`` set for one that parses it."""
    if inspect.signature(main).parameters:
        code = main(argv)
    else:
        saved = sys.argv
        sys.argv = [name, *argv]
        try:
            code = main()
        finally:
            sys.argv = saved
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("only", nargs="*", help="topics to run (bench_<topic>), default all")
    parser.add_argument("--full", action="store_true", help="full-size runs instead of --quick")
    args = parser.parse_args(argv)
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if args.only:
        wanted = {n if n.startswith("bench_") else f"bench_{n}" for n in args.only}
        unknown = wanted - set(names)
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {', '.join(names)}")
            return 2
        names = [n for n in names if n in wanted]
    failed = []
    for name in names:
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        argv_for = [] if args.full else ["--quick"]
        try:
            code = _run_main(importlib.import_module(f"benchmarks.{name}").main, name, argv_for)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name} failed: {type(exc).__name__}: {exc}")
            code = 1
        print(f"=== {name}: exit {code} in {time.perf_counter() - start:.1f}s ===\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
