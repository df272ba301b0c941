"""The lean intake of MvsClient against a real nats-server: nothing lost, nothing reordered."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvs.bus import connect
from mvs.natsclient import MvsClient

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
