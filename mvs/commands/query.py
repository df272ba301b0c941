"""``mvs query "SQL"``: read-only SQL over the projections, running or stopped."""

from __future__ import annotations

import argparse

from mvs.settings import Settings
from projections.query import format_table, query


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="run a read-only SQL query over the projections")
    p.add_argument("sql", help="one SELECT statement, e.g. \"SELECT * FROM memories LIMIT 5\"")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the host")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    table = query(settings.duckdb_path, args.sql, timeout=args.timeout)
    print(format_table(table, args.format))
    return 0
