"""Rollback, per the plan's Rollback Plan: flags to 0 %, config from backup, projections as of
an earlier point of the log, and not one event deleted.

Steps, in this order (the first is the one that protects users, so it goes first):

1. **Flags to 0.** Every feature flag (those in the KV bucket and those the config names) is
   set to 0.0 with actor ``rollback``: all traffic goes back to the legacy path at once, and
   each change is a ``flag.set.v1`` event.
2. **Config from backup.** The config files of the chosen backup (default: the newest backup
   holding config) are verified (SHA-256) and restored; the current ones are moved aside.
3. **Projections as of a point.** Every projection is folded afresh from sequence 1 up to the
   chosen sequence (``to_seq``), or up to the last event stored at or before ``to_time``, or
   (when neither is given) up to the ``MVS_EVENTS`` sequence recorded in the backup. The fold
   runs into a new DuckDB file with the projections' own code
   (:class:`projections.runner.ProjectionRunner`), which then replaces ``mvs.duckdb``; the old
   file is moved to ``$MVS_HOME/backups/pre-rollback-<timestamp>/``.

The event log is only read: ``MVS_EVENTS`` denies delete and purge, and the report checks its
message count before and after. Events after the rollback point stay in the log. A projection
host started afterwards resumes after the rollback point and folds them again, unless
``skip_later`` is set: then every projection's position is set to the log's last sequence, so
the events between the rollback point and now stay in the log but out of the read model (a
later full rebuild brings them back).

Preconditions are checked before anything changes: the backup verifies, the point is inside
the log, and no projection host holds the DuckDB file (stop it with ``mvs down``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mvs.errors import ConfigError, ProjectionError
from mvs.flags import FlagStore
from mvs.publisher import EventPublisher
from projections.query import running_host
from projections.registry import PROJECTIONS, projection
from projections.runner import ProjectionRunner, RawMessage
from replay.backup import latest_backup, read_manifest, restore_backup, verify_backup
from streams.definitions import EVENTS_STREAM

__all__ = ["RollbackReport", "projections_as_of", "rollback", "seq_at_time", "subject_matches"]


@dataclass
class RollbackReport:
    flags: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (was, now)
    backup: Path | None = None
    config_files: list[str] = field(default_factory=list)
    to_seq: int | None = None
    log_last_seq: int = 0
    projections: dict[str, int] = field(default_factory=dict)  # name -> events folded
    old_duckdb: Path | None = None
    events_before: int = 0
    events_after: int = 0
    skip_later: bool = False

    @property
    def events_kept(self) -> bool:
        return self.events_after >= self.events_before


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


async def seq_at_time(nc: Client, at: float, *, stream: str = EVENTS_STREAM) -> int:
    """The sequence of the last message stored at or before epoch time ``at`` (0: none)."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    try:
        msg = await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}",
                               json.dumps({"start_time": stamp}).encode(), timeout=10.0)
    except nats.errors.TimeoutError as exc:
        raise ProjectionError(f"JetStream did not answer a message lookup on {stream}") from exc
    reply = json.loads(msg.data)
    if "error" in reply:
        if reply["error"].get("code") == 404:  # nothing at or after ``at``: all of it is before
            return int(info.state.last_seq)
        raise ProjectionError(f"cannot find the message at {stamp}: {reply['error']}")
    found = reply["message"]
    seq = int(found["seq"])
    when = datetime.fromisoformat(found["time"]).timestamp()
    return seq if when <= at else seq - 1


async def projections_as_of(
    js: JetStreamContext,
    dest: Path,
    to_seq: int,
    *,
    names: Iterable[str] | None = None,
    batch: int = 2000,
) -> dict[str, int]:
    """Fold events 1..``to_seq`` of the log into a new DuckDB file ``dest``; events per name."""
    if dest.exists():
        raise ProjectionError(f"{dest} exists: refusing to fold into an old file")
    db = duckdb.connect(str(dest))
    runners = [ProjectionRunner(projection(n), db, js, batch=batch)
               for n in (names or PROJECTIONS)]
    try:
        for r in runners:
            r.prepare()
        if to_seq > 0:
            await _fold_range(js, runners, to_seq, batch)
        for r in runners:
            _set_position(r, to_seq)
        return {r.projection.name: r.events_applied for r in runners}
    finally:
        for r in runners:
            r.con.close()
        db.execute("CHECKPOINT")
        db.close()


async def _fold_range(
    js: JetStreamContext, runners: list[ProjectionRunner], to_seq: int, batch: int
) -> None:
    """Fold events 1..``to_seq`` with a pull consumer: fetches are flow-controlled, so a slow
    fold can never make the client drop messages (a push consumer can, silently)."""
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                            inactive_threshold=120.0, max_waiting=1)
    psub = await js.pull_subscribe("mvs.evt.>", durable=None, stream=EVENTS_STREAM,
                                   config=config)
    try:
        seq = 0
        while seq < to_seq:
            try:
                msgs = await psub.fetch(min(batch, to_seq - seq), timeout=5.0)
            except TimeoutError as exc:  # nats' own TimeoutError and asyncio's bare one
                raise ProjectionError(f"the log ended at seq {seq}, before seq {to_seq}") from exc
            raw = []
            for msg in msgs:
                got = msg.metadata.sequence.stream
                # MVS_EVENTS denies delete and purge: its sequences have no holes.
                if got != seq + 1:
                    raise ProjectionError(f"expected seq {seq + 1} of {EVENTS_STREAM}, got {got}")
                seq = got
                if seq <= to_seq:
                    raw.append(RawMessage(seq, msg.subject, msg.data))
            await asyncio.to_thread(_fold, runners, raw)
    finally:
        await psub.unsubscribe()


def _fold(runners: list[ProjectionRunner], msgs: list[RawMessage]) -> None:
    for r in runners:
        patterns = r.projection.subjects
        mine = [m for m in msgs if any(subject_matches(p, m.subject) for p in patterns)]
        if mine:
            r.apply(mine)


def _set_position(runner: ProjectionRunner, seq: int) -> None:
    """Pin the position at ``seq`` even if the projection's last own event came earlier."""
    runner.con.execute(
        "INSERT OR REPLACE INTO projection_positions VALUES (?, ?, ?)",
        [runner.name, seq, time.time()],
    )
    runner.last_seq = seq


async def _flags_to_zero(
    js: JetStreamContext, names: Iterable[str]
) -> dict[str, tuple[float, float]]:
    publisher = EventPublisher(js)
    store = await FlagStore.open(js, events=publisher, watch=False)
    try:
        out = {}
        for name in sorted(set(store.snapshot()) | set(names)):
            was = store.fraction(name)
            await store.set(name, 0.0, actor="rollback")
            out[name] = (was, 0.0)
        return out
    finally:
        await store.stop()
        await publisher.close()


async def rollback(
    nc: Client,
    *,
    home: Path,
    config_dir: Path,
    duckdb_path: Path,
    flag_names: Iterable[str] = (),
    to_seq: int | None = None,
    to_time: float | None = None,
    backup: Path | None = None,
    skip_later: bool = False,
    projections: bool = True,
) -> RollbackReport:
    """Run the rollback steps; see the module docstring."""
    if to_seq is not None and to_time is not None:
        raise ConfigError("give --to-seq or --to-time, not both")
    js = nc.jetstream(timeout=10.0)
    report = RollbackReport(skip_later=skip_later)
    # ---- preconditions: nothing changes unless all of them hold
    src = backup or latest_backup(home, with_part="config")
    manifest = verify_backup(src)
    if "config" not in manifest.parts:
        raise ConfigError(f"backup {src} holds no config")
    info = await js.stream_info(EVENTS_STREAM)
    report.events_before = int(info.state.messages)
    report.log_last_seq = int(info.state.last_seq)
    if projections:
        if to_time is not None:
            to_seq = await seq_at_time(nc, to_time)
        elif to_seq is None:
            to_seq = read_manifest(src).streams.get(EVENTS_STREAM, {}).get("last_seq")
            if to_seq is None:
                raise ConfigError(f"backup {src.name} has no {EVENTS_STREAM} snapshot to take "
                                  "the rollback point from: give --to-seq or --to-time")
        if not 0 <= to_seq <= report.log_last_seq:
            raise ConfigError(f"--to-seq {to_seq} is outside the log (1..{report.log_last_seq})")
        owner = running_host(duckdb_path)
        if owner is not None:
            raise ProjectionError(
                f"a projection host ({owner}) holds {duckdb_path}; nothing was changed. Move "
                "traffic back now with 'mvs rollback --no-projections' (flags and config), "
                "then 'mvs down' and run 'mvs rollback' again for the projections")
    report.to_seq = to_seq
    # ---- 1. flags to 0
    report.flags = await _flags_to_zero(js, flag_names)
    # ---- 2. config from backup
    restored = await restore_backup(None, src, home=home, config_dir=config_dir,
                                    parts=("config",))
    report.backup, report.config_files = src, restored.config_files
    # ---- 3. projections as of the point
    if projections and to_seq is not None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        tmp = duckdb_path.with_name(f"{duckdb_path.name}.rollback-{stamp}")
        tmp.unlink(missing_ok=True)
        report.projections = await projections_as_of(js, tmp, to_seq)
        if skip_later:
            con = duckdb.connect(str(tmp))
            con.execute("UPDATE projection_positions SET last_seq = ?", [report.log_last_seq])
            con.close()
        if duckdb_path.exists():
            aside = home / "backups" / f"pre-rollback-{stamp}"
            aside.mkdir(parents=True, exist_ok=True)
            for path in (duckdb_path, duckdb_path.with_name(duckdb_path.name + ".wal")):
                if path.exists():
                    shutil.move(str(path), str(aside / path.name))
            report.old_duckdb = aside / duckdb_path.name
        tmp.replace(duckdb_path)
    info = await js.stream_info(EVENTS_STREAM)
    report.events_after = int(info.state.messages)
    return report
