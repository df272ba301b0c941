"""``mvs status [--json]``: the digital twin's view of the running system."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from mvs import tasks
from mvs.bus import connect
from mvs.errors import NatsUnavailable, ServiceCallError
from mvs.rpc import ServiceClient
from mvs.services.twin import TwinStatus
from mvs.settings import Settings
from mvs.supervisor import ServiceRow, read_state, running_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="services and health, host CPU/memory, models, flags, breakers"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def services_table(rows: Iterable[ServiceRow]) -> str:
    lines = [f"{'SERVICE':<27} {'HOST':<7} {'PROCESS':<8} {'STATUS':<10} {'PID':>7} {'UPTIME':>8}"]
    for r in rows:
        up = f"{r.uptime_s:.0f}s" if r.uptime_s is not None else "-"
        pid = str(r.pid) if r.pid else "-"
        line = f"{r.service:<27} {r.host:<7} {r.process:<8} {r.status:<10} {pid:>7} {up:>8}"
        lines.append(line + (f"  {r.detail}" if r.detail and r.status != "healthy" else ""))
    return "\n".join(lines)


def twin_report(status: TwinStatus) -> str:
    out = []
    for h in status.hosts:
        out.append(
            f"host {h.host}: cpu {h.cpu_percent:.0f}%  memory {h.memory_used_mb:.0f}/"
            f"{h.memory_total_mb:.0f} MB ({h.memory_percent:.0f}%)"
        )
    out.append("")
    out.append(f"{'SERVICE':<27} {'HOST':<7} {'PROCESS':<8} {'STATUS':<10} {'PID':>7} {'SEEN':>6}")
    now = time.time()
    for s in status.services:
        seen = f"{now - s.last_seen_at:.0f}s"
        line = (f"{s.service:<27} {s.host:<7} {s.process or '-':<8} {s.status:<10} "
                f"{s.pid or '-':>7} {seen:>6}")
        out.append(line + (f"  {s.detail}" if s.detail and s.status != "healthy" else ""))
    out.append("")
    if status.models:
        out.append("models loaded: " + ", ".join(
            f"{m.model_id} ({m.backend}, {m.memory_mb:.0f} MB)" for m in status.models))
    else:
        out.append("models loaded: none")
    out.append("flags: " + (", ".join(f"{k}={v:g}" for k, v in status.flags.items()) or "none"))
    if status.breakers:
        out.append("breakers: " + ", ".join(
            f"{b.service}->{b.dependency} {b.state}" for b in status.breakers))
    else:
        out.append("breakers: all closed")
    if status.as_of_seq < status.stream_seq:
        out.append(f"(the twin projection had applied the stream up to seq {status.as_of_seq} "
                   f"of {status.stream_seq}: the newest events may be missing)")
    return "\n".join(out)


async def fetch_status(url: str) -> TwinStatus:
    nc = await connect(url, name="mvs-status")
    try:
        return await ServiceClient(nc, timeout=3.0).call(
            "SystemDigitalTwin", "status", None, TwinStatus
        )
    finally:
        await nc.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = running_url(settings)
    if url is None:
        raise NatsUnavailable(f"MVS is not running on {settings.home} (start it with `mvs up`)")
    state = read_state(settings)
    try:
        status = tasks.run(fetch_status(url))
    except ServiceCallError as exc:
        if args.json:
            print(msgspec.json.encode({"error": str(exc), "supervisor": state}).decode())
        else:
            print(f"digital twin unavailable: {exc}")
            if state is not None:
                print(services_table(state.services))
        return 1
    if args.json:
        doc: dict[str, Any] = msgspec.to_builtins(status)
        doc["supervisor"] = msgspec.to_builtins(state) if state is not None else None
        print(msgspec.json.encode(doc).decode())
    else:
        if state is not None:
            print(f"supervisor pid {state.pid} ({state.host}), NATS {state.url}, "
                  f"state {state.state}")
        print(twin_report(status))
    return 0
