"""``mvs export --parquet DIR``: every history and projection table as Parquet files."""

from __future__ import annotations

import argparse
from pathlib import Path

from mvs.settings import Settings
from projections.query import export


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the projections (one Parquet file per table)")
    p.add_argument("--parquet", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    for path in export(settings.duckdb_path, args.parquet):
        print(path)
    return 0
