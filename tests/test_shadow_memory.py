"""Shadow replay of legacy memory reads against the real MemoryOrchestratorService.

The legacy memories reach MVS the way ``mvs replay`` brings them (``memory.written.v1`` events
with their legacy ids); the projection host runs as its own process (``mvs projections run``)
and the memory service answers from it. A recorded ``get_memory`` exchange must then match
exactly, and a memory whose content changed in migration must show up as a field diff.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mvs.bus import connect
from mvs.config import load_config
from mvs.service import ServiceContext
from replay.shadow import MvsTarget, ShadowReport, run_shadow
from streams.definitions import apply_streams
from streams.events.memory import MemoryWritten

memory_service = pytest.importorskip("mvs.services.memory")
STATUS_SUBJECT = "mvs.svc.projections.status"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "mvs_startup_config.yaml"

LEGACY: dict[str, dict[str, Any]] = {
    "mem-0b6c2a4e-1": {"memory_id": "mem-0b6c2a4e-1", "content": "User prefers green tea",
                       "memory_type": "general", "tier": "medium", "importance": 0.7,
                       "tags": ["preferences"], "created_at": 1750268000.0},
    "mem-0b6c2a4e-2": {"memory_id": "mem-0b6c2a4e-2", "content": "Meeting moved to Friday",
                       "memory_type": "interaction", "tier": "short", "importance": 0.4,
                       "tags": [], "created_at": 1750268100.0},
}


@pytest.fixture
def projection_host(nats_url: str, tmp_path: Path) -> Iterator[str]:
    env = {**os.environ, "MVS_HOME": str(tmp_path / "home"), "MVS_NATS_URL": nats_url}
    log = (tmp_path / "projections.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mvs.cli", "projections", "run"], env=env,
                            stdout=log, stderr=log)

    async def wait() -> None:
        nc = await connect(nats_url)
        try:
            for _ in range(300):
                try:
                    await nc.request(STATUS_SUBJECT, b"", timeout=0.2)
                    return
                except Exception:
                    await asyncio.sleep(0.1)
            raise RuntimeError(f"projection host did not start: {proc.poll()}")
        finally:
            await nc.close()

    try:
        asyncio.run(wait())
        yield nats_url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def _projected(ctx: ServiceContext, seq: int) -> None:
    for _ in range(300):
        msg = await ctx.nc.request(STATUS_SUBJECT, b"", timeout=2.0)
        status = {s["projection"]: s["last_seq"] for s in json.loads(msg.data)}
        if status.get("memory", 0) >= seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the memory projection did not reach seq {seq}")


def _trace(path: Path, content_in_legacy: dict[str, str]) -> Path:
    lines = []
    for memory_id, record in LEGACY.items():
        reply_memory = {**record, "content": content_in_legacy.get(memory_id, record["content"]),
                        "access_count": 7, "last_accessed_at": 1750269999.0}
        lines.append({"time": 1750270000.0, "agent": "MemoryOrchestratorService",
                      "request": {"action": "get_memory", "data": {"memory_id": memory_id},
                                  "request_id": "x", "source_agent": "SessionMemoryAgent",
                                  "timestamp": "2025-06-18T18:06:40"},
                      "reply": {"status": "success", "memory": reply_memory}})
    lines.append({"time": 1750270001.0, "agent": "KnowledgeBase",
                  "request": {"action": "get_memory", "data": {"memory_id": "mem-missing"}},
                  "reply": {"status": "error", "message": "Memory mem-missing not found"}})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_migrated_memories_read_back_exactly_as_the_legacy_agent_answered(
    projection_host: str, tmp_path: Path
) -> None:
    cfg = load_config(CONFIG)
    mapping = {a: name for name, spec in cfg.services.items() for a in spec.legacy_agents}

    async def go() -> tuple[ShadowReport, ShadowReport]:
        ctx = await ServiceContext.connect(projection_host, config=cfg)
        await apply_streams(ctx.js)
        last = 0
        for record in LEGACY.values():
            ack = await ctx.events.publish(MemoryWritten(
                **record, event_id=f"L1:{record['memory_id']}", source="replay"))
            last = ack.seq
        await _projected(ctx, last)  # as 'mvs replay' waits for the projections
        memory = memory_service.MemoryOrchestratorService(ctx, decay_every_s=0)
        await memory.start()
        try:
            target = MvsTarget(ctx.nc, mapping, timeout_s=30.0)
            same = await run_shadow(_trace(tmp_path / "same.jsonl", {}), target)
            changed = await run_shadow(
                _trace(tmp_path / "changed.jsonl", {"mem-0b6c2a4e-2": "Meeting moved to Monday"}),
                target)
            return same, changed
        finally:
            await memory.stop()
            await ctx.close()

    same, changed = asyncio.run(go())
    assert same.ok, same.table()
    assert same.actions["MemoryOrchestratorService.get_memory"].matched == 2
    assert same.actions["KnowledgeBase.get_memory"].matched == 1  # not found on both sides
    [diff] = changed.mismatches
    assert diff.line == 2 and diff.diff == [
        "memory.content: expected 'Meeting moved to Monday', got 'Meeting moved to Friday'"]
