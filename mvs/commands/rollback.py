"""``mvs rollback``: flags to 0, config from backup, projections as of an earlier point."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from mvs import tasks
from mvs.bus import NatsEndpoint, connect
from mvs.config import load_config
from mvs.errors import ConfigError
from mvs.settings import Settings
from replay.backup import find_backup
from replay.rollback import RollbackReport, rollback


def parse_time(text: str) -> float:
    """Epoch seconds, or ISO 8601 (a time without a zone is UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--to-time wants ISO 8601 or epoch seconds, got {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollback", help="flags to 0, config from backup, projections as of a point")
    point = p.add_mutually_exclusive_group()
    point.add_argument("--to-seq", type=int, default=None, metavar="N",
                       help="rebuild projections from events 1..N of MVS_EVENTS")
    point.add_argument("--to-time", type=parse_time, default=None, metavar="T",
                       help="rebuild projections from the events stored at or before T")
    p.add_argument("--backup", default=None, metavar="NAME",
                   help="config backup to restore (default: the newest); its MVS_EVENTS "
                        "sequence is the rollback point when neither --to-seq nor --to-time")
    p.add_argument("--skip-later", action="store_true",
                   help="keep events after the point out of the projections when they resume")
    p.add_argument("--no-projections", action="store_true",
                   help="only flags and config; leave the projections as they are")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _flag_names(settings: Settings) -> list[str]:
    # A rollback must work when the config is what broke: then the bucket's flags suffice.
    try:
        return list(load_config(settings.config_path).feature_flags)
    except ConfigError:
        return []


def report_json(r: RollbackReport) -> dict[str, object]:
    return {
        "flags": {k: {"was": a, "now": b} for k, (a, b) in r.flags.items()},
        "backup": str(r.backup) if r.backup else None,
        "config_files": r.config_files,
        "to_seq": r.to_seq,
        "log_last_seq": r.log_last_seq,
        "projections": r.projections,
        "old_duckdb": str(r.old_duckdb) if r.old_duckdb else None,
        "events_before": r.events_before,
        "events_after": r.events_after,
        "events_kept": r.events_kept,
        "skip_later": r.skip_later,
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    backup = find_backup(settings.home, args.backup) if args.backup else None
    names = _flag_names(settings)

    async def go(url: str) -> RollbackReport:
        nc = await connect(url, name="mvs-rollback")
        try:
            return await rollback(
                nc, home=settings.home, config_dir=Path(settings.config_path).absolute().parent,
                duckdb_path=settings.duckdb_path, flag_names=names, to_seq=args.to_seq,
                to_time=args.to_time, backup=backup, skip_later=args.skip_later,
                projections=not args.no_projections,
            )
        finally:
            await nc.close()

    with NatsEndpoint(settings) as endpoint:
        report = tasks.run(go(endpoint.url))
    if args.json:
        print(json.dumps(report_json(report), indent=2))
        return 0
    for name, (was, now) in report.flags.items():
        print(f"flag {name}: {was:g} -> {now:g}")
    print(f"config restored from {report.backup}: {', '.join(report.config_files) or 'no files'}")
    if report.to_seq is not None:
        folded = ", ".join(f"{k} {v}" for k, v in sorted(report.projections.items()))
        print(f"projections rebuilt as of seq {report.to_seq} of {report.log_last_seq} "
              f"(events folded: {folded})")
        if report.old_duckdb:
            print(f"previous DuckDB file moved to {report.old_duckdb}")
    print(f"event log: {report.events_before} messages before, {report.events_after} after "
          "(nothing deleted)")
    return 0
