"""The worker against a real Redis: ordering, dedupe, concurrency, dead letters."""

from __future__ import annotations

import asyncio

import pytest
from helpers import background, eventually, make_settings
from plugins import EchoAgent, FailingAgent, StepsAgent

from gateway.events import InboundMessage
from gateway.runtime import running
from gateway.worker import Worker


def sms(i: str, text: str, conversation: str = "+15550001/+15559999", sender: str = "+15550001") -> InboundMessage:
    return InboundMessage(id=i, channel="sms", conversation=conversation, sender=sender, text=text)


@pytest.fixture
async def rt(settings):
    async with running(settings, agents=[EchoAgent(), StepsAgent(), FailingAgent()], builtins=False) as rt:
        yield rt


async def test_question_and_answer_resume_the_same_thread(rt):
    async with background(Worker(rt, "w1")):
        first = await rt.ingest.accept(sms("SM1", "hello"), "echo")
        await eventually(lambda: _status(rt, first.thread_id, "waiting_human"))
        second = await rt.ingest.accept(sms("SM2", "yes really"), "echo")
        assert second.thread_id == first.thread_id
        await eventually(lambda: _status(rt, first.thread_id, "done"))
    thread = await rt.store.load(first.thread_id)
    assert [e.type for e in thread.events] == ["user_message", "request_human_input", "human_response", "done_for_now"]
    assert thread.events[-1].text == "ok: yes really"
    assert thread.events[2].sender == "sms:+15550001"


async def test_same_inbound_id_twice_is_one_event(rt):
    a = await rt.ingest.accept(sms("SMdup", "hello"), "echo")
    b = await rt.ingest.accept(sms("SMdup", "hello"), "echo")
    assert b.duplicate and b.thread_id == a.thread_id
    async with background(Worker(rt, "w1")):
        await eventually(lambda: _status(rt, a.thread_id, "waiting_human"))
    thread = await rt.store.load(a.thread_id)
    assert [e.type for e in thread.events].count("user_message") == 1


async def test_a_stranger_cannot_answer(rt):
    async with background(Worker(rt, "w1")):
        first = await rt.ingest.accept(sms("SM1", "hello"), "echo")
        await eventually(lambda: _status(rt, first.thread_id, "waiting_human"))
        await rt.ingest.accept(sms("SM2", "I answer", sender="+15557777"), "echo")
        await eventually(lambda: _has(rt, first.thread_id, "note"))
    thread = await rt.store.load(first.thread_id)
    assert thread.status == "waiting_human"
    note = thread.events[-1]
    assert note.kind == "refused" and note.sender == "sms:+15557777"


async def test_events_of_one_thread_apply_in_arrival_order(rt):
    """A burst of messages on one conversation lands in the order it arrived."""
    first = await rt.ingest.accept(sms("m0", "steps=0"), "steps")
    for i in range(1, 30):
        await rt.ingest.accept(sms(f"m{i}", f"message {i}"), "steps")
    async with background(Worker(rt, "w1"), Worker(rt, "w2")):
        await eventually(lambda: _count(rt, first.thread_id, "user_message", 30))
    thread = await rt.store.load(first.thread_id)
    texts = [e.text for e in thread.events if e.type == "user_message"]
    assert texts == ["steps=0"] + [f"message {i}" for i in range(1, 30)]


async def test_200_threads_progress_concurrently_in_one_worker(settings):
    """Each step sleeps 0.2 s; 200 threads x 3 steps finish only if they overlap."""
    async with running(settings, agents=[StepsAgent(delay=0.2)], builtins=False) as rt:
        ids = [
            (await rt.ingest.accept(sms(f"c{i}", "steps=3", conversation=f"conv{i}"), "steps")).thread_id
            for i in range(200)
        ]
        worker = Worker(rt, "w1")
        peak = 0

        async def sample() -> None:
            # Its own task: sampled only between the polls' 200 status reads, a quick run was missed (peak 0).
            nonlocal peak
            while True:
                peak = max(peak, len(worker._draining))
                await asyncio.sleep(0.005)

        async with background(worker):
            sampler = asyncio.create_task(sample())

            async def all_done():
                statuses = [await _status(rt, t, "done") for t in ids]
                return all(statuses)

            try:
                await eventually(all_done, timeout=120, interval=0.02)
            finally:
                sampler.cancel()
        # Serially this would be 200 x 3 x 0.2 s = 120 s; the peak shows the overlap directly.
        assert peak >= 100


async def test_a_failing_entry_goes_to_the_dead_letter_stream_and_replays(rt):
    first = await rt.ingest.accept(sms("bad1", "hello", conversation="broken-conv"), "broken")
    async with background(Worker(rt, "w1")):
        await eventually(lambda: _status(rt, first.thread_id, "failed"), timeout=30)
    dead = await rt.streams.dlq_entries()
    assert len(dead) == 1
    p, dlq_id, fields = dead[0]
    assert "agent bug" in fields["reason"]
    # Fix the agent, replay: the entry is applied and the thread completes.
    rt.agents["broken"] = EchoAgent()
    rt.agents["broken"].name = "broken"
    assert await rt.streams.replay(p, dlq_id)
    async with background(Worker(rt, "w1")):
        await eventually(lambda: _status(rt, first.thread_id, "waiting_human"))
    assert await rt.streams.dlq_entries() == []


async def test_an_entry_that_does_not_validate_is_dead_lettered_without_blocking(rt):
    p = 0
    await rt.redis.xadd(
        rt.keys.inbound(p), {"k": "inbound", "t": rt.keys.new_thread_id(p), "a": "echo", "d": '{"id": 5}'}
    )
    good = await rt.ingest.accept(sms("ok1", "hello", conversation="fine"), "echo")
    async with background(Worker(rt, "w1")):
        await eventually(lambda: _status(rt, good.thread_id, "waiting_human"))
        dead = await eventually(rt.streams.dlq_entries)
    assert "invalid" in dead[0][2]["reason"]


async def test_four_partitions_keep_order_when_a_reply_hashes_elsewhere(redis_url, prefix):
    settings = make_settings(redis_url, prefix, partitions=4)
    async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
        # Find two conversations in different partitions; bind the second to the first's thread.
        convs = [f"conv-{i}" for i in range(50)]
        a = convs[0]
        b = next(
            c for c in convs if rt.keys.conversation_partition("sms", c) != rt.keys.conversation_partition("sms", a)
        )
        first = await rt.ingest.accept(sms("p1", "hello", conversation=a), "echo")
        async with background(Worker(rt, "w1")):
            await eventually(lambda: _status(rt, first.thread_id, "waiting_human"))
            await rt.ingest.bind("sms", b, first.thread_id)
            await rt.ingest.accept(sms("p2", "from elsewhere", conversation=b), "echo")
            await eventually(lambda: _status(rt, first.thread_id, "done"))
        thread = await rt.store.load(first.thread_id)
        assert thread.events[-1].text == "ok: from elsewhere"
        for key in [k async for k in rt.redis.scan_iter(match=f"{prefix}:*")]:
            assert key.startswith(f"{prefix}:{{p") or key.startswith(f"{prefix}:workers"), key


async def _status(rt, thread_id: str, status: str) -> bool:
    meta = await rt.store.meta(thread_id)
    return meta.get("status") == status


async def _has(rt, thread_id: str, kind: str) -> bool:
    thread = await rt.store.load(thread_id)
    return thread is not None and any(e.type == kind for e in thread.events)


async def _count(rt, thread_id: str, kind: str, n: int) -> bool:
    thread = await rt.store.load(thread_id)
    return thread is not None and sum(e.type == kind for e in thread.events) >= n


async def test_streams_are_trimmed_once_every_consumer_is_done(rt):
    ids = [
        (await rt.ingest.accept(sms(f"t{i}", "hello", conversation=f"trim{i}"), "echo")).thread_id for i in range(20)
    ]
    async with background(Worker(rt, "w1")):
        for tid in ids:
            await eventually(lambda: _status(rt, tid, "waiting_human"))
        stream = rt.keys.inbound(0)
        assert await rt.redis.xlen(stream) >= 20
        await rt.streams.trim(stream, "workers")
        assert await rt.redis.xlen(stream) <= 1  # only the last delivered entry stays as the floor


async def test_a_worker_survives_its_consumer_group_disappearing(rt):
    """Redis restarted without its data (no AOF): the group is gone; the worker makes it again."""
    async with background(Worker(rt, "w1")):
        first = await rt.ingest.accept(sms("g1", "hello", conversation="g-1"), "echo")
        await eventually(lambda: _status(rt, first.thread_id, "waiting_human"))
        await rt.redis.xgroup_destroy(rt.keys.inbound(0), "workers")
        second = await rt.ingest.accept(sms("g2", "hello", conversation="g-2"), "echo")
        await eventually(lambda: _status(rt, second.thread_id, "waiting_human"))


async def test_a_step_longer_than_the_lease_keeps_its_thread(settings):
    """Steps of 1.2 s under a 333 ms lease (claim timeout 1 s): the holder keeps renewing, so the
    other worker, which claims the idle entries, never takes the thread over mid-step."""
    assert settings.lease_ms < 400
    async with running(settings, agents=[StepsAgent(delay=1.2)], builtins=False) as rt:
        first = await rt.ingest.accept(sms("long1", "steps=2", conversation="slow-conv"), "steps")
        lease = rt.keys.lease(first.thread_id)
        owners: set[str] = set()

        async def watch() -> None:
            while True:
                owner = await rt.redis.get(lease)
                if owner:
                    owners.add(owner)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            async with background(Worker(rt, "w1"), Worker(rt, "w2")):
                await eventually(lambda: _status(rt, first.thread_id, "done"), timeout=30)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        thread = await rt.store.load(first.thread_id)
    assert [e.type for e in thread.events] == [
        "user_message",
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "done_for_now",
    ]
    assert len(owners) == 1, f"the thread changed hands mid-step: {owners}"


class GatedAgent(StepsAgent):
    """Each step waits for `gate`; counts the steps running at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.running = 0

    async def step(self, thread, event):
        self.running += 1
        try:
            await self.gate.wait()
            return await super().step(thread, event)
        finally:
            self.running -= 1


async def test_a_full_worker_leaves_entries_on_the_stream_for_others(redis_url, prefix):
    """worker_concurrency caps the threads one worker holds and the entries it reads; a second worker
    takes what the first left, and once the steps go on every thread finishes."""
    agent = GatedAgent()
    settings = make_settings(redis_url, prefix, worker_concurrency=2)
    async with running(settings, agents=[agent], builtins=False) as rt:
        ids = [
            (await rt.ingest.accept(sms(f"g{i}", "steps=1", conversation=f"gated{i}"), "steps")).thread_id
            for i in range(5)
        ]
        first, second = Worker(rt, "w1"), Worker(rt, "w2")
        stream = rt.keys.inbound(0)
        async with background(first):
            await eventually(lambda: agent.running == 2)
            async with background(second):
                await eventually(lambda: agent.running == 4)
                assert len(first._draining) == len(second._draining) == 2
                # The fifth entry was read by neither: it waits on the stream, not in a full worker.
                pending = await rt.redis.xpending(stream, "workers")
                assert pending["pending"] == 4
                agent.gate.set()

                async def all_done():
                    return all([await _status(rt, t, "done") for t in ids])

                await eventually(all_done, timeout=30)
