"""The lean intake of MvsClient against a real nats-server: nothing lost, nothing reordered."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.js.api import AckPolicy, ConsumerConfig

from mvs.bus import connect
from mvs.natsclient import MvsClient
from projections.runner import stream_seq

Got = list[tuple[bytes, bytes, bytes, bytes | None]]
WARM = b"warm-up"


def _sink(into: Got) -> Any:
    def sink(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        into.append((subject, reply, data, headers))

    return sink


async def _until(pred: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_raw_sink_gets_subject_reply_data_and_raw_headers(nats_url: str) -> None:
    async def main() -> Got:
        nc = await connect(nats_url)
        assert isinstance(nc, MvsClient)
        got: Got = []
        raw = await nc.subscribe_raw("raw.>", _sink(got))
        await nc.publish("raw.a", b"plain")
        await nc.publish("raw.b", b"with reply", reply="the.reply")
        await nc.publish("raw.c", b"", headers={"X-One": "1"})
        await nc.publish("raw.d", b"both", reply="r2", headers={"X-Two": "2"})
        await _until(lambda: len(got) == 4)
        await raw.unsubscribe()
        await nc.publish("raw.e", b"after")
        await nc.flush()
        await asyncio.sleep(0.1)
        await nc.close()
        return got

    got = asyncio.run(main())
    assert [(s, r, d) for s, r, d, _ in got] == [
        (b"raw.a", b"", b"plain"),
        (b"raw.b", b"the.reply", b"with reply"),
        (b"raw.c", b"", b""),
        (b"raw.d", b"r2", b"both"),
    ]
    assert got[0][3] is None and got[1][3] is None
    assert got[2][3] is not None and b"X-One: 1" in got[2][3]
    assert got[3][3] is not None and got[3][3].startswith(b"NATS/1.0")


# one server for all examples: each uses its own connections and ends its subscriptions
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 70_000), min_size=1, max_size=40),
    pings_every=st.integers(1, 7),
)
def test_messages_interleaved_with_pings_reach_their_subscriptions_in_order(
    nats_url: str, sizes: list[int], pings_every: int
) -> None:
    """Payloads of any size (split across reads), other operations between them (PONGs of
    flushes), raw and ordinary subscriptions on one connection: every message arrives once,
    in order, at the subscription it was sent to."""

    async def main() -> tuple[Got, list[bytes], list[bytes]]:
        nc = await connect(nats_url)
        pub = await connect(nats_url)
        got: Got = []
        plain: list[bytes] = []

        async def cb(msg: Any) -> None:
            plain.append(msg.data)

        raw = await nc.subscribe_raw("mix.raw", _sink(got))
        sub = await nc.subscribe("mix.plain", cb=cb)
        await nc.flush()
        # A brand-new publisher's first message can miss a just-made subscription (seen with
        # the stock nats-py client on both ends too): publish markers until both see one.
        for _ in range(200):
            await pub.publish("mix.raw", WARM)
            await pub.publish("mix.plain", WARM)
            await pub.flush()
            await asyncio.sleep(0.01)
            if got and plain:
                break
        sent = []
        for i, size in enumerate(sizes):
            body = (f"{i}:".encode() + b"x" * size)[: max(size, 1)]
            sent.append(body)
            headers = {"N": str(i)} if i % 2 else None
            await pub.publish("mix.raw", body, headers=headers)
            await pub.publish("mix.plain", body)
            if i % pings_every == 0:
                await nc.flush()  # a PING from nc, answered by a PONG among the messages
        await pub.flush()

        def done() -> bool:
            return (
                sum(d != WARM for _, _, d, _ in got) == len(sizes)
                and sum(d != WARM for d in plain) == len(sizes)
            )

        await _until(done)
        await raw.unsubscribe()
        await sub.unsubscribe()
        await pub.close()
        await nc.close()
        return got, plain, sent

    got, plain, sent = asyncio.run(main())
    assert [d for _, _, d, _ in got if d != WARM] == sent
    assert [d for d in plain if d != WARM] == sent


def test_a_failing_sink_does_not_stop_the_connection(nats_url: str) -> None:
    async def main() -> tuple[int, Got]:
        nc = await connect(nats_url)
        calls = 0

        def bad(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("sink bug")

        good: Got = []
        await nc.subscribe_raw("fail.bad", bad)
        await nc.subscribe_raw("fail.good", _sink(good))
        for _ in range(3):
            await nc.publish("fail.bad", b"x")
        await nc.publish("fail.good", b"still here")
        await _until(lambda: len(good) == 1)
        # ordinary request/reply on the same connection still works
        js_ok = await nc.jetstream().account_info()
        await nc.close()
        assert js_ok is not None
        return calls, good

    calls, good = asyncio.run(main())
    assert calls == 3
    assert good[0][2] == b"still here"


_streams = itertools.count()


async def _pull_through_columns(
    url: str, bodies: list[bytes], with_headers: set[int]
) -> tuple[list[tuple[str, Any]], str]:
    """Publish ``bodies`` to a fresh stream, pull them all (and the status that follows) into
    a column subscription; what reached the column sink and the raw sink, in order."""
    stream = f"COLS{next(_streams)}"
    nc = await connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    for i, body in enumerate(bodies):
        headers = {"N": str(i)} if i in with_headers else None
        await js.publish(f"{stream.lower()}.m{i}", body, headers=headers)
    await js.add_consumer(stream, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.NONE))
    seen: list[tuple[str, Any]] = []
    inbox = nc.new_inbox()

    def columns(seqs: list[int], subjects: list[str], datas: list[bytes]) -> None:
        seen.append(("run", list(zip(seqs, subjects, datas, strict=True))))

    def sink(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        seen.append(("msg", (subject, reply, data, headers)))

    sub = await nc.subscribe_columns(inbox, columns, sink)
    request = json.dumps({"batch": len(bodies) + 5, "no_wait": True}).encode()
    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.c", request, reply=inbox)
    await _until(lambda: bool(seen) and seen[-1][0] == "msg" and not seen[-1][1][1])
    await sub.unsubscribe()
    await js.delete_stream(stream)
    await nc.close()
    return seen, stream.lower()


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 70_000), min_size=1, max_size=30),
    with_headers=st.sets(st.integers(0, 29), max_size=5),
)
def test_a_column_subscription_gets_every_pulled_message_once_in_order(
    nats_url: str, sizes: list[int], with_headers: set[int]
) -> None:
    """Runs go to the column sink, anything else (a message with headers, one split across
    reads, the closing status) to the raw sink: together every message once, in stream
    order, with its sequence, subject and data, and the status last."""
    bodies = [(f"{i}:".encode() + b"y" * size)[: max(size, 1)] for i, size in enumerate(sizes)]
    seen, prefix = asyncio.run(_pull_through_columns(nats_url, bodies, with_headers))
    got: list[tuple[int, str, bytes]] = []
    for kind, what in seen[:-1]:
        if kind == "run":
            got.extend(what)
        else:
            subject, reply, data, _ = what
            assert reply, "a status before the last message"
            got.append((stream_seq(reply), subject.decode(), data))
    assert got == [(i + 1, f"{prefix}.m{i}", body) for i, body in enumerate(bodies)]
    status = seen[-1][1][3]
    assert status is not None and status.startswith(b"NATS/1.0 404")


def test_small_pulled_messages_come_as_runs(nats_url: str) -> None:
    bodies = [f"event {i}".encode() for i in range(500)]
    seen, _ = asyncio.run(_pull_through_columns(nats_url, bodies, set()))
    in_runs = sum(len(what) for kind, what in seen if kind == "run")
    # a run ends where a read of the socket ends; the rest come one by one
    assert in_runs >= 450
    assert sum(kind == "msg" for kind, _ in seen) <= 51
