"""``mvs streams`` run as a user runs it: the installed console script against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec

from mvs.bus import connect, jetstream
from streams.catalog import decode_event, encode_event, subject_of
from streams.definitions import EVENTS_STREAM
from streams.events.memory import MemoryWritten

MVS = Path(sys.executable).with_name("mvs")


def _mvs(*args: str, nats_url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MVS_NATS_URL": nats_url, "MVS_HOME": str(home)}
    done = subprocess.run(
        [str(MVS), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"mvs {' '.join(args)} failed: {done.stderr}"
    return done


def _counts(listing: str) -> dict[str, int]:
    rows = [line.split() for line in listing.splitlines()[1:] if line.strip()]
    return {row[0]: int(row[1]) for row in rows}


def test_streams_apply_twice_prints_created_then_unchanged(nats_url: str, tmp_path: Path) -> None:
    first = _mvs("streams", "apply", nats_url=nats_url, home=tmp_path).stdout.splitlines()
    second = _mvs("streams", "apply", nats_url=nats_url, home=tmp_path).stdout.splitlines()
    assert f"{EVENTS_STREAM}: created" in first
    assert all(line.endswith(": created") for line in first), first
    assert sorted(line.split(":")[0] for line in second) == sorted(
        line.split(":")[0] for line in first
    )
    assert all(line.endswith(": unchanged") for line in second), second


def test_streams_ls_counts_events_published_by_hand_once_per_msg_id(
    nats_url: str, tmp_path: Path
) -> None:
    _mvs("streams", "apply", nats_url=nats_url, home=tmp_path)
    event = MemoryWritten(memory_id="m-1", content="the user's cat is called Ada")
    by_hand = msgspec.json.encode(msgspec.to_builtins(event))

    async def publish() -> list[bytes]:
        nc = await connect(nats_url)
        js = jetstream(nc)
        headers = {"Nats-Msg-Id": event.event_id}
        # The same event as hand-written JSON and as MessagePack, and a retry: one message.
        acks = [
            await js.publish(subject_of(event), payload, headers=headers)
            for payload in (by_hand, encode_event(event), by_hand)
        ]
        assert [bool(ack.duplicate) for ack in acks] == [False, True, True]
        other = MemoryWritten(memory_id="m-2", content="a second memory")
        await js.publish(
            subject_of(other), encode_event(other), headers={"Nats-Msg-Id": other.event_id}
        )
        stored = [
            (await js.get_msg(EVENTS_STREAM, seq, direct=True)).data or b"" for seq in (1, 2)
        ]
        await nc.close()
        return stored

    stored = asyncio.run(publish())
    assert decode_event(stored[0]) == event
    listing = _mvs("streams", "ls", nats_url=nats_url, home=tmp_path).stdout
    assert _counts(listing)[EVENTS_STREAM] == 2
    assert "mvs.evt.>" in listing


def test_the_hand_published_json_example_in_the_docs_is_stored_once(
    nats_url: str, tmp_path: Path
) -> None:
    """The ``nats req`` example of docs/subjects.md, sent the way the CLI sends it."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "subjects.md").read_text()
    found = re.search(r"nats req (\S+) \\\n\s+'(.*?)' \\\n\s+-H 'Nats-Msg-Id:(\S+)'", doc, re.S)
    assert found, "the nats req example is missing from docs/subjects.md"
    subject, body, msg_id = found[1], found[2].encode(), found[3]
    _mvs("streams", "apply", nats_url=nats_url, home=tmp_path)

    async def request() -> list[dict[str, object]]:
        nc = await connect(nats_url)
        replies = [
            await nc.request(subject, body, timeout=5, headers={"Nats-Msg-Id": msg_id})
            for _ in range(2)
        ]
        await nc.close()
        return [json.loads(reply.data) for reply in replies]

    first, again = asyncio.run(request())
    assert first["stream"] == EVENTS_STREAM and not first.get("duplicate")
    assert again.get("duplicate") is True
    event = decode_event(body)
    assert event.event_id == msg_id
    assert subject_of(event) == subject
