"""``mvs backup [DEST]`` and ``mvs restore SRC``: config, stream snapshots, DuckDB files."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

from nats.aio.client import Client

from mvs import tasks
from mvs.bus import NatsEndpoint, connect
from mvs.errors import ConfigError
from mvs.settings import Settings
from replay.backup import (
    ALL_PARTS,
    BackupResult,
    Part,
    RestoreReport,
    create_backup,
    find_backup,
    list_backups,
    read_manifest,
    restore_backup,
    verify_backup,
)


def _parts(text: str) -> tuple[Part, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in ALL_PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(bad) or '(none)'}: choose from {', '.join(ALL_PARTS)}"
        )
    return cast(tuple[Part, ...], parts)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="back up config, JetStream streams and DuckDB files")
    p.add_argument("dest", nargs="?", type=Path, default=None,
                   help="folder to create the backup in (default $MVS_HOME/backups)")
    p.add_argument("--only", type=_parts, default=ALL_PARTS, metavar="PARTS",
                   help="comma list of config,streams,duckdb (default all)")
    p.add_argument("--list", action="store_true", help="list backups instead of making one")
    p.add_argument("--require-duckdb", action="store_true",
                   help="fail instead of leaving out a DuckDB file a running system holds")
    p.set_defaults(func=run_backup)

    r = sub.add_parser("restore", help="verify a backup and restore it")
    r.add_argument("src", help="backup folder, or a backup name under $MVS_HOME/backups")
    r.add_argument("--only", type=_parts, default=ALL_PARTS, metavar="PARTS",
                   help="comma list of config,streams,duckdb (default all)")
    r.add_argument("--replace-streams", action="store_true",
                   help="delete and restore streams that exist (loses what came after the backup)")
    r.add_argument("--verify-only", action="store_true", help="check integrity, restore nothing")
    r.set_defaults(func=run_restore)


@contextlib.asynccontextmanager
async def _maybe_connect(url: str | None) -> AsyncIterator[Client | None]:
    if url is None:
        yield None
        return
    nc: Client = await connect(url, name="mvs-backup")
    try:
        yield nc
    finally:
        await nc.close()


def _config_dir(settings: Settings) -> Path:
    return settings.config_path.absolute().parent


def run_backup(args: argparse.Namespace, settings: Settings) -> int:
    if args.list:
        for path in list_backups(settings.home):
            m = read_manifest(path)
            size = sum(f.size for f in m.files)
            print(f"{m.name:<24} {','.join(m.parts):<22} {len(m.files):>5} files {size:>12} B")
        return 0
    needs_nats = "streams" in args.only

    async def go(url: str | None) -> BackupResult:
        async with _maybe_connect(url) as nc:
            return await create_backup(nc, home=settings.home, config_dir=_config_dir(settings),
                                       dest=args.dest, parts=args.only,
                                       require_duckdb=args.require_duckdb)

    if needs_nats:
        with NatsEndpoint(settings) as endpoint:
            result = tasks.run(go(endpoint.url))
    else:
        result = tasks.run(go(None))
    m = result.manifest
    print(f"backup {result.path}: {len(m.files)} files, {result.total_bytes} bytes")
    for note in m.notes:
        print(f"  note: {note}")
    for name, state in m.streams.items():
        print(f"  stream {name}: {state['messages']} messages (seq {state['first_seq']}.."
              f"{state['last_seq']})")
    return 0


def run_restore(args: argparse.Namespace, settings: Settings) -> int:
    src = find_backup(settings.home, args.src)
    manifest = verify_backup(src)
    print(f"backup {src}: integrity ok ({len(manifest.files)} files)")
    if args.verify_only:
        return 0
    missing = [p for p in args.only if p not in manifest.parts]
    if missing and args.only != ALL_PARTS:
        raise ConfigError(f"backup {src.name} has no {', '.join(missing)}")
    needs_nats = "streams" in args.only and "streams" in manifest.parts

    async def go(url: str | None) -> RestoreReport:
        async with _maybe_connect(url) as nc:
            return await restore_backup(nc, src, home=settings.home,
                                        config_dir=_config_dir(settings), parts=args.only,
                                        replace_streams=args.replace_streams)

    if needs_nats:
        with NatsEndpoint(settings) as endpoint:
            report = tasks.run(go(endpoint.url))
    else:
        report = tasks.run(go(None))
    for name in report.config_files:
        print(f"  config {name}: restored")
    for name in report.duckdb_files:
        print(f"  duckdb {name}: restored")
    for name, what in report.streams.items():
        print(f"  stream {name}: {what}")
    if report.moved_aside:
        print(f"previous files moved to {report.moved_aside}")
    return 0
