"""A question with a deadline: unanswered, the thread gets a `timeout` event and the agent decides."""

from __future__ import annotations

from datetime import timedelta

from helpers import background, eventually

from gateway.events import DoneForNow, InboundMessage, RequestHumanInput, Thread, utcnow
from gateway.runtime import running
from gateway.worker import Worker


class ImpatientAgent:
    """Asks with a one-second deadline; on timeout it reminds once, then gives up."""

    name = "impatient"
    description = "deadline test"

    def tools(self):
        return []

    async def step(self, thread: Thread, event) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        last = thread.events[-1]
        timeouts = sum(e.type == "timeout" for e in thread.events)
        if last.type == "user_message" or (last.type == "timeout" and timeouts == 1):
            return thread.with_events(RequestHumanInput(text="still there?", deadline=utcnow() + timedelta(seconds=1)))
        if last.type == "timeout":
            return thread.with_events(DoneForNow(text="giving up"))
        if last.type == "human_response":
            return thread.with_events(DoneForNow(text=f"got {last.text}"))
        return thread


def sms(i, text):
    return InboundMessage(id=i, channel="sms", conversation="+1/+2", sender="+1", text=text)


async def test_an_unanswered_question_times_out_and_the_agent_decides(settings):
    async with running(settings, builtins=False, agents=[ImpatientAgent()]) as rt:
        async with background(Worker(rt, "w1")):
            tid = (await rt.ingest.accept(sms("d1", "hi"), "impatient")).thread_id

            async def done():
                thread = await rt.store.load(tid)
                return thread if thread and thread.status == "done" else None

            thread = await eventually(done)
    kinds = [e.type for e in thread.events]
    assert kinds == ["user_message", "request_human_input", "timeout", "request_human_input", "timeout", "done_for_now"]
    assert thread.events[2].request_index == 1 and thread.events[4].request_index == 3


async def test_an_answer_in_time_cancels_the_deadline(settings):
    async with running(settings, builtins=False, agents=[ImpatientAgent()]) as rt:
        async with background(Worker(rt, "w1")):
            tid = (await rt.ingest.accept(sms("a1", "hi"), "impatient")).thread_id
            await eventually(lambda: _status(rt, tid, "waiting_human"))
            await rt.ingest.accept(sms("a2", "here"), "impatient")
            await eventually(lambda: _status(rt, tid, "done"))
            # Let the deadline pass: the stale timeout entry must change nothing.
            await eventually(lambda: _no_delayed(rt), timeout=10)
            await eventually(lambda: _inbox_empty(rt, tid))
        thread = await rt.store.load(tid)
    assert [e.type for e in thread.events] == ["user_message", "request_human_input", "human_response", "done_for_now"]


async def _status(rt, tid, status):
    return (await rt.store.meta(tid)).get("status") == status


async def _no_delayed(rt):
    return await rt.redis.zcard(rt.keys.delayed(0, "inbound")) == 0


async def _inbox_empty(rt, tid):
    pending = await rt.redis.xpending(rt.keys.inbound(0), "workers")
    return await rt.redis.zcard(rt.keys.inbox(tid)) == 0 and pending["pending"] == 0
