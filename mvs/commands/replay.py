"""``mvs replay SOURCE...``: migrate legacy data by replaying it into the event log."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from mvs import tasks
from mvs.bus import NatsEndpoint, connect
from mvs.errors import ConfigError
from mvs.settings import Settings
from replay.engine import Progress, ReplayOptions, SourceResult, replay
from replay.model import BadValue, to_time
from replay.verify import VerifyReport, render_report
from replay.verify_run import replay_and_verify, wait_for_running_projections

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay legacy data (SQLite, JSON, logs) into MVS events, then optionally verify",
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                   help="legacy files or folders (folders are walked)")
    p.add_argument("--format", dest="fmt", default=None,
                   help="force a format for all sources: L1..L10 or its name (e.g. memory-db)")
    p.add_argument("--dry-run", action="store_true",
                   help="read and map everything, publish nothing (no NATS needed)")
    p.add_argument("--verify", action="store_true",
                   help="after replaying, compare the legacy sources with the MVS projections")
    p.add_argument("--since", default=None, help="only records at or after T (epoch or ISO)")
    p.add_argument("--until", default=None, help="only records before T (epoch or ISO)")
    p.add_argument("--strict", action="store_true", help="stop at the first rejected record")
    p.add_argument("--batch", type=int, default=4000, help="events per publish batch")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.epilog = "exit status: 0 ok, 1 a source failed, 3 verification found a mismatch"
    p.set_defaults(func=run)


def _time_arg(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return to_time(value, name)
    except BadValue as exc:
        raise ConfigError(f"--{name}: {exc}") from exc


class _ProgressLine:
    """A one-line progress display on a terminal: records, rate and ETA."""

    def __init__(self) -> None:
        self.started: dict[Path, float] = {}
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        start = self.started.setdefault(p.path, now)
        if now - self.last < 0.2 and p.done != p.total:
            return
        self.last = now
        rate = p.done / max(now - start, 1e-6)
        total = f"/{p.total:,}" if p.total else ""
        eta = ""
        if p.total and rate > 0:
            eta = f" ETA {max(p.total - p.done, 0) / rate:,.0f}s"
        line = f"[{p.format}] {p.path.name}: {p.done:,}{total} records {rate:,.0f}/s{eta}"
        sys.stderr.write("\r" + line[:120].ljust(120))
        sys.stderr.flush()


def _as_dict(r: SourceResult) -> dict[str, Any]:
    return {
        "path": r.path, "format": r.format, "status": r.status,
        "records_read": r.records_read, "events_written": r.events_written,
        "duplicates": r.duplicates, "rejected": r.rejected,
        "outside_window": r.outside_window,
        "skipped_already_published": r.skipped_already_published,
        "reasons": dict(r.reasons), "findings": dict(r.findings),
        "entities": dict(r.entities), "last_seq": r.last_seq,
        "seconds": round(r.seconds, 3), "error": r.error,
    }


def render_summary(results: list[SourceResult]) -> str:
    head = (f"{'FMT':<4} {'SOURCE':<46} {'STATUS':<17} {'READ':>8} {'WRITTEN':>8} "
            f"{'DUPS':>7} {'SKIPPED':>8} {'REJECTED':>8}")
    lines = [head]
    for r in results:
        name = Path(r.path).name
        lines.append(
            f"{r.format:<4} {name[:46]:<46} {r.status:<17} {r.records_read:>8} "
            f"{r.events_written:>8} {r.duplicates:>7} {r.skipped_already_published:>8} "
            f"{r.rejected:>8}"
        )
    tot = {k: sum(getattr(r, k) for r in results) for k in (
        "records_read", "events_written", "duplicates", "skipped_already_published", "rejected")}
    lines.append(
        f"{'':<4} {'TOTAL':<46} {'':<17} {tot['records_read']:>8} {tot['events_written']:>8} "
        f"{tot['duplicates']:>7} {tot['skipped_already_published']:>8} {tot['rejected']:>8}"
    )
    for r in results:
        name = Path(r.path).name
        for reason, n in r.reasons.most_common():
            lines.append(f"  rejected {n:>6}  {name}: {reason}")
        for finding, n in r.findings.most_common():
            lines.append(f"  finding  {n:>6}  {name}: {finding}")
        if r.error:
            lines.append(f"  {r.status}: {name}: {r.error}")
        if r.outside_window:
            lines.append(f"  outside --since/--until: {r.outside_window} records of {name}")
    return "\n".join(lines)


async def _main(
    url: str | None, args: argparse.Namespace, opts: ReplayOptions, settings: Settings
) -> int:
    progress = _ProgressLine() if sys.stderr.isatty() and not args.json else None
    nc = await connect(url, name="mvs-replay") if url else None
    verification: VerifyReport | None = None
    projection_note = ""
    try:
        try:
            if args.verify and nc is not None and url:
                results, verification = await replay_and_verify(
                    nc, url, settings.duckdb_path, args.sources, opts, progress=progress
                )
            else:
                results = await replay(nc, args.sources, opts, progress=progress)
        finally:
            if progress is not None:
                sys.stderr.write("\n")
        if nc is not None and not args.verify:
            projection_note = await wait_for_running_projections(settings.duckdb_path)
    finally:
        if nc is not None:
            await nc.close()
    report: dict[str, Any] = {"sources": [_as_dict(r) for r in results]}
    if verification is not None:
        report["verification"] = msgspec.to_builtins(verification)
    if projection_note:
        report["projections"] = projection_note
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_summary(results))
        if projection_note:
            print(f"Note: {projection_note}")
        if verification is not None:
            print()
            print(render_report(verification))
    if any(r.status == "failed" for r in results):
        return 1
    return 3 if verification is not None and not verification.ok else 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    opts = ReplayOptions(
        fmt=args.fmt, dry_run=args.dry_run, since=_time_arg(args.since, "since"),
        until=_time_arg(args.until, "until"), strict=args.strict, batch=max(args.batch, 1),
    )
    if args.dry_run:
        if args.verify:
            raise ConfigError("--verify compares what was published: drop --dry-run")
        return tasks.run(_main(None, args, opts, settings))
    with NatsEndpoint(settings) as endpoint:
        return tasks.run(_main(endpoint.url, args, opts, settings))
