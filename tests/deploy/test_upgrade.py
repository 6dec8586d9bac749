"""Upgrading with threads in flight: a thread stored by an older release still loads and resumes."""

from __future__ import annotations

import json

from helpers import background, eventually
from plugins import EchoAgent
from recorder import Recorder

from gateway.events import THREAD_VERSION, InboundMessage
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.store.threads import thread_from_stored
from gateway.worker import Worker

# A thread as the first release stored it: no `version`, `responders`, `approvers`,
# `updated_at`, `channel` or `person` in the hash, and events without the fields added
# since (a question without `choices`, a message without `channel` or `reply_to`), one
# carrying a field this release no longer knows.
OLD_META = {
    "id": "th_0ld",
    "agent": "echo",
    "origin": json.dumps({"channel": "rec", "address": "ann", "conversation": "old-conv"}),
    "created_at": "2024-05-01T09:00:00+00:00",
    "status": "waiting_human",
    "events": "2",
}
OLD_EVENTS = [
    json.dumps(
        {"type": "user_message", "at": "2024-05-01T09:00:00+00:00", "text": "hello", "sender": "rec:ann", "legacy": 1}
    ),
    json.dumps({"type": "request_human_input", "at": "2024-05-01T09:00:01+00:00", "text": "you said 'hello'?"}),
]


def test_an_old_stored_thread_loads():
    thread = thread_from_stored(OLD_META, OLD_EVENTS)
    assert thread.version == 1 <= THREAD_VERSION
    assert thread.responders == [] and thread.approvers == []
    assert thread.updated_at == thread.created_at
    assert [e.type for e in thread.events] == ["user_message", "request_human_input"]
    assert thread.status == "waiting_human"


async def test_an_old_waiting_thread_resumes_on_the_new_release(settings):
    settings = settings.model_copy(update={"default_agent": "echo"})
    recorder = Recorder()
    async with running(settings, agents=[EchoAgent()], channels=[recorder], builtins=False) as rt:
        k, tid = rt.keys, OLD_META["id"]
        p = k.thread_partition(tid)
        await rt.redis.hset(k.thread(tid), mapping=OLD_META)
        await rt.redis.rpush(k.events(tid), *OLD_EVENTS)
        await rt.redis.set(k.conversation("rec", "old-conv"), tid)
        await rt.redis.zadd(k.index(p), {tid: 1714554001000})
        await rt.redis.zadd(k.status_index(p, "waiting_human"), {tid: 1714554001000})

        async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
            reply = InboundMessage(id="r1", channel="rec", conversation="old-conv", sender="ann", text="yes")
            assert (await rt.ingest.accept(reply, "echo")).thread_id == tid
            await eventually(lambda: recorder.texts(tid) == ["ok: yes"])
        thread = await rt.store.load(tid)
        assert thread.status == "done"
        assert [e.type for e in thread.events][:4] == [
            "user_message",
            "request_human_input",
            "human_response",
            "done_for_now",
        ]
