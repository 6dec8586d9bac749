"""The outbox against a real Redis and a slow provider on loopback: its cap, a thread's order, shutdown.

The messages are queued as the save script queues them (an entry on the outbox stream,
and the message in its thread's unsettled set), so each test controls what is waiting.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from helpers import background, eventually
from plugins import SinkChannel

from gateway.events import OutboundMessage
from gateway.outbox import ORDER_WAIT, Outbox
from gateway.registry import Sent
from gateway.runtime import running


class SlowProvider:
    """Holds every request until `release` is set; counts how many it holds at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.arrived: list[dict] = []  # the messages, in the order they reached us

    async def handle(self, request: web.Request) -> web.Response:
        message = await request.json()
        self.arrived.append(message)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.Response(headers={"x-message-id": f"sent-{message['id']}"})


@pytest.fixture
async def provider():
    slow = SlowProvider()
    app = web.Application()
    app.router.add_post("/inbox", slow.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    slow.url = f"http://127.0.0.1:{runner.addresses[0][1]}/inbox"
    yield slow
    slow.release.set()
    await runner.cleanup()


async def queue(rt, thread_id: str, index: int) -> OutboundMessage:
    message = OutboundMessage(
        id=f"{thread_id}-{index}", thread_id=thread_id, agent="echo", channel="test", address="a", text=f"#{index}"
    )
    await rt.redis.zadd(rt.keys.unsettled(thread_id), {message.id: index})
    await rt.redis.xadd(rt.keys.outbox(0), {"m": message.model_dump_json(exclude_none=True)})
    return message


async def test_a_backlog_larger_than_the_cap_never_has_more_deliveries_in_flight(settings, provider):
    settings = settings.model_copy(update={"sender_concurrency": 3})
    async with running(settings, agents=[], builtins=False, channels=[SinkChannel(provider.url)]) as rt:
        for i in range(20):
            await queue(rt, f"t{i}", 1)
        async with background(Outbox(rt, "o1")):
            await eventually(lambda: provider.in_flight == 3)
            # Only what is being delivered was read: the rest waits on the stream, for any sender.
            pending = await rt.redis.xpending(rt.keys.outbox(0), "senders")
            assert pending["pending"] == 3
            provider.release.set()
            await eventually(lambda: len(provider.arrived) == 20, timeout=30)
            await eventually(lambda: _pending_is(rt, 0))
    assert provider.most == 3


async def test_a_thread_s_second_message_leaves_when_the_first_settles_without_polling(settings, provider):
    # Two senders of one delivery each: the one that reads the second message cannot wait
    # on the first in-process (a lock per thread does that), so it parks it.
    settings = settings.model_copy(update={"sender_concurrency": 1})
    async with running(settings, agents=[], builtins=False, channels=[SinkChannel(provider.url)]) as rt:
        first = await queue(rt, "t1", 1)
        second = await queue(rt, "t1", 2)
        parked = rt.keys.parked("t1")
        async with background(Outbox(rt, "o1"), Outbox(rt, "o2")):
            await eventually(lambda: len(provider.arrived) == 1)
            await eventually(lambda: rt.redis.hexists(parked, second.id))
            # Parked on the safety timer only: nothing brings it back before the first settles.
            member = await rt.redis.hget(parked, second.id)
            due = await rt.redis.zscore(rt.keys.delayed(0, "outbox"), member)
            assert due / 1000 > time.time() + ORDER_WAIT / 2
            assert [m["id"] for m in provider.arrived] == [first.id]
            provider.release.set()
            await eventually(lambda: len(provider.arrived) == 2)
            await eventually(lambda: _pending_is(rt, 0))
        assert [m["id"] for m in provider.arrived] == [first.id, second.id]
        assert [m["held"] for m in provider.arrived] == [0, 1]  # the second was parked once, and never again
        assert not await rt.redis.exists(parked, rt.keys.unsettled("t1"))
        assert await rt.redis.zcard(rt.keys.delayed(0, "outbox")) == 0


class Interrupting(SinkChannel):
    """The provider takes the message; the outcome's first write then waits on `gate`, and the sender is shut down."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = asyncio.Event()
        self.outbox: Outbox | None = None
        self.draining: asyncio.Task | None = None
        self.delivery: asyncio.Task | None = None

    async def send(self, message: OutboundMessage) -> Sent:
        sent = await super().send(message)
        assert self.outbox is not None
        self.delivery = asyncio.current_task()
        self.draining = asyncio.create_task(self.outbox.drain(0))  # no grace: the delivery is cancelled at once
        # A conversation opened: binding it to the thread is the outcome's first write.
        return Sent(detail=sent.detail, conversation=f"conv-{message.thread_id}")


async def test_a_shutdown_between_the_send_and_its_record_still_records_it(settings, provider):
    channel = Interrupting(provider.url)
    async with running(settings, agents=[], builtins=False, channels=[channel]) as rt:
        provider.release.set()
        bind = rt.ingest.bind

        async def held_bind(*args) -> None:
            await channel.gate.wait()  # the shutdown's cancel lands here, after the send, before any record
            await bind(*args)

        rt.ingest.bind = held_bind
        message = await queue(rt, "t1", 1)
        outbox = channel.outbox = Outbox(rt, "o1")
        async with background(outbox):
            await eventually(lambda: channel.draining is not None)
            delivery = channel.delivery
            assert delivery is not None
            await eventually(lambda: delivery.cancelling() or delivery.done())
            channel.gate.set()
            await channel.draining
        assert delivery.cancelled()  # the cancel reached the delivery while its outcome was being written
        assert await rt.redis.get(rt.keys.sent(0, message.id)) == "sent"
        assert not await rt.redis.exists(rt.keys.sending(0, message.id))  # no one will call it ambiguous
        assert await rt.redis.get(rt.keys.conversation("test", "conv-t1")) == "t1"
        assert await _pending_is(rt, 0)
        [(_, entries)] = await rt.redis.xread({rt.keys.inbound(0): "0"})
        assert [fields["k"] for _, fields in entries] == ["delivery"]


async def _pending_is(rt, n: int) -> bool:
    return (await rt.redis.xpending(rt.keys.outbox(0), "senders"))["pending"] == n
