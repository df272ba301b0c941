"""The service framework against a real nats-server: typed calls, error replies, events."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import msgspec
import pytest
from logread import stored_events

from mvs.errors import ServiceCallError
from mvs.natsserver import NatsServer
from mvs.rpc import ERROR_CODE_HEADER, ERROR_HEADER, Empty, HealthReply
from mvs.service import Service, ServiceClient, ServiceContext, current_call, endpoint
from streams.definitions import apply_streams
from streams.events.system import ServiceCallCompleted, ServiceRegistered


class Greet(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    times: int = 1


class Greeting(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    call_id: str = ""


class Greeter(Service):
    """Says hello."""

    name = "Greeter"

    @endpoint("greet", request=Greet, reply=Greeting)
    async def greet(self, req: Greet) -> Greeting:
        if req.times < 0:
            raise ValueError("times must not be negative")
        call = current_call()
        return Greeting(text=" ".join([f"hello {req.name}"] * req.times),
                        call_id=call.call_id if call else "")

    @endpoint("boom", request=Empty, reply=Empty)
    async def boom(self, req: Empty) -> Empty:
        raise RuntimeError("kaput")

    @endpoint("slow", request=Greet, reply=Greeting, concurrency=4)
    async def slow(self, req: Greet) -> Greeting:
        await asyncio.sleep(0.2)
        return Greeting(text=req.name)


async def _events(ctx: ServiceContext, subject: str = "mvs.evt.service.>") -> list[object]:
    return await stored_events(ctx.js, subject)


def test_typed_request_reply_records_a_call_event(nats_url: str) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        svc = Greeter(ctx)
        await svc.start()
        try:
            client = ServiceClient(ctx.nc)
            reply = await client.call("Greeter", "greet", Greet(name="ada", times=2), Greeting)
            assert reply.text == "hello ada hello ada"
            assert reply.call_id
            await ctx.events.flush()
            events = await _events(ctx)
            calls = [e for e in events if isinstance(e, ServiceCallCompleted)]
            assert [(c.action, c.outcome, c.call_id) for c in calls] == [
                ("greet", "ok", reply.call_id)
            ]
            assert any(isinstance(e, ServiceRegistered) and e.service == "Greeter" for e in events)
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())


def test_malformed_requests_get_error_replies_and_the_service_keeps_serving(nats_url: str) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        svc = Greeter(ctx)
        await svc.start()
        try:
            subject = "mvs.svc.Greeter.greet"
            for bad, needle in [
                (b"{not json", "malformed Greet request for Greeter.greet"),
                (b'{"times": 2}', "name"),
                (b'{"name": 5}', "$.name"),
                (b"\xc1\xc1", "malformed Greet"),
            ]:
                msg = await ctx.nc.request(subject, bad, timeout=2)
                assert msg.headers and msg.headers[ERROR_CODE_HEADER] == "400"
                assert needle in msg.headers[ERROR_HEADER]
            msg = await ctx.nc.request(subject, b'{"name": "x", "times": -1}', timeout=2)
            body = json.loads(msg.data)
            assert body == {"error": "times must not be negative", "code": "400",
                            "service": "Greeter", "action": "greet"}
            with pytest.raises(ServiceCallError) as info:
                await ServiceClient(ctx.nc).call("Greeter", "boom", Empty(), Empty)
            assert info.value.code == "500" and "kaput" in str(info.value)
            # still serving, in JSON as well as msgpack
            msg = await ctx.nc.request(subject, b'{"name": "bob"}', timeout=2)
            assert json.loads(msg.data)["text"] == "hello bob"
            stats = json.loads((await ctx.nc.request("$SRV.STATS.Greeter", b"", timeout=2)).data)
            greet = next(e for e in stats["endpoints"] if e["name"] == "greet")
            assert greet["num_requests"] == 6 and greet["data"]["errors"] == 5
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())


def test_health_endpoint_and_micro_discovery(nats_url: str) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url, host="pc2")
        await apply_streams(ctx.js)
        svc = Greeter(ctx)
        await svc.start()
        try:
            health = await ServiceClient(ctx.nc).call("Greeter", "health", None, HealthReply)
            assert health.status == "healthy" and health.host == "pc2"
            ping = json.loads((await ctx.nc.request("$SRV.PING.Greeter", b"", timeout=2)).data)
            assert ping["name"] == "Greeter" and ping["metadata"]["host"] == "pc2"
            info = json.loads((await ctx.nc.request("$SRV.INFO.Greeter", b"", timeout=2)).data)
            subjects = {e["subject"] for e in info["endpoints"]}
            assert {"mvs.svc.Greeter.greet", "mvs.svc.Greeter.health"} <= subjects
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())


def test_concurrent_endpoint_overlaps_requests(nats_url: str) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        svc = Greeter(ctx)
        await svc.start()
        try:
            client = ServiceClient(ctx.nc)
            replies = await asyncio.gather(
                *[client.call("Greeter", "slow", Greet(name=str(i)), Greeting) for i in range(4)]
            )
            assert sorted(r.text for r in replies) == ["0", "1", "2", "3"]
        finally:
            await svc.stop()
            await ctx.close()

    asyncio.run(main())


def test_calling_a_service_that_is_not_running_names_it(nats_url: str) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        try:
            with pytest.raises(ServiceCallError) as info:
                await ServiceClient(ctx.nc).call("Nobody", "greet", Greet(name="x"), Greeting)
            assert info.value.code == "503" and "Nobody is not running" in str(info.value)
        finally:
            await ctx.close()

    asyncio.run(main())


class Stubborn(Greeter):
    """A background loop whose first cancel is lost, as Python 3.11's ``wait_for`` loses one
    that lands with the awaited result (AsyncProcessor's loop did; its stop then hung)."""

    name = "Stubborn"

    async def on_start(self) -> None:
        self.cancels = 0
        self.spawn(self._loop(), name="stubborn-loop")

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                self.cancels += 1
                if self.cancels > 1:
                    raise


def test_a_background_loop_that_loses_a_cancel_does_not_hold_up_the_stop(nats_url: str) -> None:
    async def main() -> None:
        ctx = await ServiceContext.connect(nats_url)
        await apply_streams(ctx.js)
        svc = Stubborn(ctx)
        await svc.start()
        try:
            # waited for, not cancelled: a cancel from outside would end the loop by itself
            stopping = asyncio.create_task(svc.stop())
            done, _ = await asyncio.wait({stopping}, timeout=5)
            assert done, "the service's stop waits for a loop that let a cancel pass"
            assert svc.cancels == 2
            with pytest.raises(ServiceCallError, match="Stubborn is not running"):
                await ServiceClient(ctx.nc, timeout=1).call("Stubborn", "greet",
                                                            Greet(name="x"), Greeting)
        finally:
            await ctx.close()

    asyncio.run(main())


class Looper(Greeter):
    name = "Looper"

    async def on_start(self) -> None:
        self.loop_task = self.spawn(self._loop(), name="looper")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(10)


def test_a_service_whose_server_stops_answering_still_stops_its_background_tasks(
    nats_server: NatsServer,
) -> None:
    """With the server frozen (SIGSTOP: the connection looks up, nothing answers), stopping
    the endpoints cannot finish: nats-py's drain waits 10 s for a PONG, then raises. The
    background tasks must stop all the same, or they outlive the process's connection and,
    looping on it, the process itself (seen when a supervisor died with its server)."""

    async def main() -> None:
        ctx = await ServiceContext.connect(nats_server.url)
        await apply_streams(ctx.js)
        svc = Looper(ctx)
        await svc.start()
        pid = nats_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await svc.stop()
            assert svc.loop_task.done()
        finally:
            os.kill(pid, signal.SIGCONT)
            await ctx.close()

    asyncio.run(main())
