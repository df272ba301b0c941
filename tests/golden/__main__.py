"""``python -m tests.golden [--rewrite TAG ...]``: write missing golden files (see package)."""

from __future__ import annotations

import argparse

from tests.golden import write_golden

parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__)
parser.add_argument(
    "--rewrite",
    nargs="+",
    default=(),
    metavar="TAG",
    help="re-encode these tags' stored examples after a deliberate additive schema change",
)
args = parser.parse_args()
for tag in write_golden(rewrite=tuple(args.rewrite)):
    print(f"wrote tests/golden/{tag}.json")
