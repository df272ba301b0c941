"""Backups of an MVS installation: config files, JetStream stream snapshots, DuckDB files.

A backup is a folder, by default ``$MVS_HOME/backups/<UTC timestamp>/``::

    manifest.json            what is inside, with a SHA-256 and size per file
    config/...               the config folder (``MVS_CONFIG``'s folder), as it was
    streams/<NAME>.tar.s2    a JetStream snapshot per stream (see :mod:`replay.snapshots`)
    streams/<NAME>.json      the stream's config and state at snapshot time
    duckdb/<file>.duckdb     each DuckDB file of ``$MVS_HOME``, checkpointed before the copy

It is written under ``<name>.partial`` and renamed when complete, so an interrupted backup is
never taken for a good one. :func:`verify_backup` recomputes every digest; a restore verifies
first and restores nothing when any file is missing or corrupted, naming each bad file.

Restoring config and DuckDB files moves the current ones aside to
``$MVS_HOME/backups/pre-restore-<timestamp>/`` first: a restore never destroys data. A stream
is restored where it does not exist or never held a message (``mvs up`` creates the streams
empty); replacing a stream with messages (``replace_streams``) deletes it first, which loses
whatever it received after the backup, so it is opt-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import msgspec
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from mvs.errors import MvsError
from replay.snapshots import restore_stream, snapshot_stream

__all__ = [
    "BackupCorrupted",
    "BackupError",
    "BackupResult",
    "DuckdbBusy",
    "FileEntry",
    "Manifest",
    "RestoreReport",
    "create_backup",
    "find_backup",
    "latest_backup",
    "list_backups",
    "read_manifest",
    "restore_backup",
    "verify_backup",
]

Kind = Literal["config", "stream", "stream_meta", "duckdb"]
Part = Literal["config", "streams", "duckdb"]
ALL_PARTS: tuple[Part, ...] = ("config", "streams", "duckdb")
MANIFEST = "manifest.json"
FORMAT = 1


class BackupError(MvsError, RuntimeError):
    """A backup could not be made or restored; the message names the file or stream."""


class DuckdbBusy(BackupError):
    """Another process (the projection host of a running system) holds a DuckDB file."""


class BackupCorrupted(BackupError, ValueError):
    """A backup failed its integrity check; ``problems`` names every bad file."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"backup {path} failed its integrity check: " + "; ".join(problems))
        self.problems = problems


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # relative to the backup folder, POSIX separators
    kind: Kind
    sha256: str
    size: int
    origin: str  # config: path below the config folder; duckdb: file name; stream*: stream name


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: int
    name: str
    created_at: float
    parts: list[str]
    files: list[FileEntry]
    streams: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    notes: list[str] = msgspec.field(default_factory=list)

    def of_kind(self, kind: Kind) -> list[FileEntry]:
        return [f for f in self.files if f.kind == kind]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.manifest.files)


@dataclass
class RestoreReport:
    backup: Path
    config_files: list[str] = field(default_factory=list)
    duckdb_files: list[str] = field(default_factory=list)
    streams: dict[str, str] = field(default_factory=dict)  # stream -> what was done
    moved_aside: Path | None = None


_manifest_encoder = msgspec.json.Encoder(order="sorted")
_manifest_decoder = msgspec.json.Decoder(Manifest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stamp(at: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at))


def _fresh_dir(parent: Path, base: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        if not (parent / name).exists() and not (parent / f"{name}.partial").exists():
            return parent / name
    raise BackupError(f"no free backup name for {base} in {parent}")


def _config_files(config_dir: Path) -> list[Path]:
    if not config_dir.is_dir():
        return []
    return sorted(
        p
        for p in config_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    )


def _entry(root: Path, path: Path, kind: Kind, origin: str) -> FileEntry:
    rel = path.relative_to(root).as_posix()
    return FileEntry(path=rel, kind=kind, sha256=_sha256(path), size=path.stat().st_size,
                     origin=origin)


def _copy_duckdb(src: Path, dst: Path) -> None:
    """Copy a DuckDB file consistently: checkpoint, then copy while holding its lock."""
    try:
        con = duckdb.connect(str(src))
    except duckdb.Error as exc:
        raise DuckdbBusy(
            f"cannot open {src} for a consistent copy (is a projection process holding it? "
            f"stop it with 'mvs down' first): {exc}"
        ) from exc
    try:
        # The checkpoint folds the WAL into the file; holding the connection keeps other
        # processes from writing while the bytes are copied.
        con.execute("CHECKPOINT")
        shutil.copyfile(src, dst)
    finally:
        con.close()


async def create_backup(
    nc: Client | None,
    *,
    home: Path,
    config_dir: Path,
    dest: Path | None = None,
    parts: Iterable[Part] = ALL_PARTS,
    streams: Iterable[str] | None = None,
    require_duckdb: bool = False,
) -> BackupResult:
    """Make a backup folder under ``dest`` (default ``home/backups``) and return it.

    ``streams`` limits the snapshots to these streams (default: every stream on the server);
    ``nc`` may be ``None`` when ``parts`` has no ``"streams"``.

    A DuckDB file held by a running projection host cannot be copied consistently from
    outside (DuckDB locks the file for its one writer process). It is then left out and the
    manifest says so in ``notes``: the projections are derived from the event log, so a
    restore that includes the stream snapshots rebuilds them from sequence 1 when the host
    starts. ``require_duckdb`` makes that case an error (:class:`DuckdbBusy`) instead.
    """
    wanted = tuple(dict.fromkeys(parts))
    if "streams" in wanted and nc is None:
        raise BackupError("a backup of streams needs a NATS connection")
    created = time.time()
    final = _fresh_dir(dest or home / "backups", _stamp(created))
    work = final.with_name(final.name + ".partial")
    work.mkdir(parents=True)
    files: list[FileEntry] = []
    notes: list[str] = []
    stream_state: dict[str, dict[str, int]] = {}
    try:
        if "config" in wanted:
            for src in _config_files(config_dir):
                rel = src.relative_to(config_dir)
                dst = work / "config" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                files.append(_entry(work, dst, "config", rel.as_posix()))
        if "duckdb" in wanted:
            for src in sorted(home.glob("*.duckdb")):
                dst = work / "duckdb" / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    _copy_duckdb(src, dst)
                except DuckdbBusy as exc:
                    if require_duckdb:
                        raise
                    notes.append(f"{src.name} left out: {exc}; the projections rebuild from "
                                 "the restored event log")
                    with contextlib.suppress(OSError):
                        dst.parent.rmdir()  # only if nothing else was copied into it
                    continue
                files.append(_entry(work, dst, "duckdb", src.name))
        if "streams" in wanted:
            assert nc is not None
            names = list(streams) if streams is not None else await _stream_names(nc)
            for name in names:
                snap = await snapshot_stream(nc, name, work / "streams" / f"{name}.tar.s2")
                meta_path = work / "streams" / f"{name}.json"
                meta_path.write_bytes(msgspec.json.encode(snap.meta))
                files.append(FileEntry(path=f"streams/{name}.tar.s2", kind="stream",
                                       sha256=snap.sha256, size=snap.size, origin=name))
                files.append(_entry(work, meta_path, "stream_meta", name))
                state = snap.meta.get("state", {})
                stream_state[name] = {
                    k: int(state.get(k, 0)) for k in ("messages", "first_seq", "last_seq")
                }
        manifest = Manifest(format=FORMAT, name=final.name, created_at=created,
                            parts=list(wanted), files=files, streams=stream_state,
                            notes=notes)
        (work / MANIFEST).write_bytes(_manifest_encoder.encode(manifest))
        _fsync_tree(work)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupResult(final, manifest)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


async def _stream_names(nc: Client) -> list[str]:
    infos = await nc.jetstream().streams_info()
    return sorted(str(i.config.name) for i in infos if i.config.name)


def read_manifest(path: Path) -> Manifest:
    try:
        return _manifest_decoder.decode((path / MANIFEST).read_bytes())
    except FileNotFoundError as exc:
        raise BackupError(f"{path} is not a backup: it has no {MANIFEST}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BackupCorrupted(path, [f"{MANIFEST} is unreadable: {exc}"]) from exc


def verify_backup(path: Path) -> Manifest:
    """Recompute every file's SHA-256; raise :class:`BackupCorrupted` naming each bad file."""
    manifest = read_manifest(path)
    if manifest.format != FORMAT:
        raise BackupError(f"backup {path} has format {manifest.format}; this MVS reads {FORMAT}")
    problems = []
    for entry in manifest.files:
        file = path / entry.path
        if not file.is_file():
            problems.append(f"{entry.path} is missing")
            continue
        size = file.stat().st_size
        if size != entry.size:
            problems.append(f"{entry.path} is corrupted (size {size}, expected {entry.size})")
        elif _sha256(file) != entry.sha256:
            problems.append(f"{entry.path} is corrupted (SHA-256 differs)")
    if problems:
        raise BackupCorrupted(path, problems)
    return manifest


def list_backups(home: Path) -> list[Path]:
    """Complete backups under ``home/backups``, oldest first."""
    root = home / "backups"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: (read_manifest(p).created_at, p.name))


def find_backup(home: Path, name_or_path: str | Path) -> Path:
    """A backup by folder path or by name under ``home/backups``."""
    path = Path(name_or_path)
    for candidate in (path, home / "backups" / str(name_or_path)):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise BackupError(f"no backup named {name_or_path} (looked in {path} and {home / 'backups'})")


def latest_backup(home: Path, *, with_part: Part = "config") -> Path:
    """The newest complete backup that holds ``with_part``."""
    for path in reversed(list_backups(home)):
        if with_part in read_manifest(path).parts:
            return path
    raise BackupError(f"no backup with {with_part} under {home / 'backups'}: run 'mvs backup'")


def _move_aside(paths: list[Path], aside: Path, base: Path) -> None:
    for p in paths:
        if p.exists():
            target = aside / p.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), str(target))


def _check_free(path: Path) -> None:
    """Raise :class:`DuckdbBusy` if another process holds the DuckDB file at ``path``."""
    if not path.exists():
        return
    try:
        duckdb.connect(str(path)).close()
    except duckdb.Error as exc:
        raise DuckdbBusy(f"cannot replace {path}: another process holds it (stop the system "
                         f"with 'mvs down' first): {exc}") from exc


def _install(src: Path, dst: Path) -> None:
    """Copy ``src`` over ``dst`` atomically (temp file in the same folder, then rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.restoring")
    shutil.copy2(src, tmp)
    tmp.replace(dst)


async def restore_backup(
    nc: Client | None,
    src: Path,
    *,
    home: Path,
    config_dir: Path,
    parts: Iterable[Part] = ALL_PARTS,
    replace_streams: bool = False,
) -> RestoreReport:
    """Verify the backup at ``src``, then restore the chosen ``parts`` of it.

    Nothing changes unless the backup verifies and no other process holds a DuckDB file that
    would be replaced (a running system: stop it with ``mvs down`` first).
    """
    manifest = verify_backup(src)
    wanted = [p for p in dict.fromkeys(parts) if p in manifest.parts]
    if "duckdb" in wanted:
        for e in manifest.of_kind("duckdb"):
            _check_free(home / e.origin)
    report = RestoreReport(backup=src)
    aside = _fresh_dir(home / "backups", f"pre-restore-{_stamp(time.time())}")
    if "config" in wanted:
        entries = manifest.of_kind("config")
        _move_aside([config_dir / e.origin for e in entries], aside / "config", config_dir)
        for e in entries:
            _install(src / e.path, config_dir / e.origin)
            report.config_files.append(e.origin)
    if "duckdb" in wanted:
        entries = manifest.of_kind("duckdb")
        # A WAL left beside the old file would be replayed into the restored one.
        olds = [home / e.origin for e in entries] + [home / f"{e.origin}.wal" for e in entries]
        _move_aside(olds, aside / "duckdb", home)
        for e in entries:
            _install(src / e.path, home / e.origin)
            report.duckdb_files.append(e.origin)
    if aside.exists():
        report.moved_aside = aside
    if "streams" in wanted:
        if nc is None:
            raise BackupError("restoring streams needs a NATS connection")
        for e in manifest.of_kind("stream"):
            report.streams[e.origin] = await _restore_one(nc, src, e, replace_streams)
    return report


async def _restore_one(nc: Client, src: Path, entry: FileEntry, replace: bool) -> str:
    name = entry.origin
    meta: dict[str, Any] = msgspec.json.decode((src / "streams" / f"{name}.json").read_bytes())
    js = nc.jetstream()
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        info = None
    if info is not None:
        # A stream that never held a message (made by 'mvs up' before the restore) loses
        # nothing when it is replaced; one with messages is only replaced when asked.
        never_used = info.state.messages == 0 and info.state.last_seq == 0
        if not replace and not never_used:
            return f"kept (exists with {info.state.messages} messages; --replace-streams replaces)"
        await js.delete_stream(name)
    restored = await restore_stream(nc, name, src / entry.path, meta)
    return f"restored ({restored.messages} messages, seq {restored.first_seq}..{restored.last_seq})"
