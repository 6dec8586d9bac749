"""Slack end to end: signed requests to the real app over HTTP, the worker and the
outbox running, and every Web API call landing on a fake Slack on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from helpers import background, eventually, make_settings
from plugins import ApprovalAgent, EchoAgent

import channels.slack as slack
from gateway.outbox import Outbox
from gateway.runtime import Runtime, running
from gateway.web.app import create_app
from gateway.worker import Worker

# The fake Slack lives with the channel's unit tests.
_FAKES = str(Path(__file__).resolve().parents[1] / "channels")
if _FAKES not in sys.path:
    sys.path.append(_FAKES)
from fake_slack import HANG, SECRET, TEAM, TOKEN, FakeSlack, Reply, click, event_body, mention, message, signed  # noqa: E402


@dataclass
class Gateway:
    fake: FakeSlack
    rt: Runtime
    http: httpx.AsyncClient

    async def event(self, event: dict, event_id: str) -> None:
        raw = json.dumps(event_body(event, event_id))
        r = await self.http.post("/slack/events", content=raw, headers=signed(raw))
        assert r.status_code == 200, r.text

    async def click(self, **kw) -> None:
        raw = click(**kw)
        r = await self.http.post(
            "/slack/events", content=raw, headers=signed(raw, content_type="application/x-www-form-urlencoded")
        )
        assert r.status_code == 200, r.text

    async def thread(self, conversation: str):
        thread_id = await eventually(lambda: self.rt.ingest.thread_for("slack", conversation))
        return await self.rt.store.load(thread_id)

    async def status(self, conversation: str, status: str) -> bool:
        thread = await self.thread(conversation)
        return thread is not None and thread.status == status

    async def has(self, conversation: str, predicate) -> bool:
        thread = await self.thread(conversation)
        return thread is not None and any(predicate(e) for e in thread.events)


@contextlib.asynccontextmanager
async def _served(app) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done())
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


@contextlib.asynccontextmanager
async def gateway(redis_url: str, prefix: str, agent, **overrides) -> AsyncIterator[Gateway]:
    async with FakeSlack() as fake:
        values = dict(
            slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=fake.url, default_agent=agent.name
        )
        settings = make_settings(redis_url, prefix, **{**values, **overrides})
        async with running(settings, agents=[agent], builtins=False, channels=[slack.channel]) as rt:
            async with _served(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
                async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                    yield Gateway(fake, rt, http)


MENTION_TS = "1710000000.000100"
THREAD = f"{TEAM}/C1/{MENTION_TS}"


async def test_mention_question_reply_answer_all_in_the_thread(redis_url, prefix):
    async with gateway(redis_url, prefix, EchoAgent()) as gw:
        await gw.event(mention("reset my password", ts=MENTION_TS), "Ev1")
        [question] = await eventually(lambda: gw.fake.posts(text="you said 'reset my password'?"))
        assert question["channel"] == "C1" and question["thread_ts"] == MENTION_TS
        await eventually(lambda: gw.fake.to("reactions.add"))
        await eventually(lambda: gw.status(THREAD, "waiting_human"))

        await gw.event(message("yes, for alice", ts="1710000050.000100", thread_ts=MENTION_TS), "Ev2")
        [answer] = await eventually(lambda: gw.fake.posts(text="ok: yes, for alice"))
        assert answer["thread_ts"] == MENTION_TS
        await eventually(lambda: gw.status(THREAD, "done"))
        assert all(p["thread_ts"] == MENTION_TS for p in gw.fake.posts())
        thread = await gw.thread(THREAD)
        assert [e.type for e in thread.events if e.type != "delivery"] == [
            "user_message",
            "request_human_input",
            "human_response",
            "done_for_now",
        ]
        assert thread.events[0].sender == "slack:U1"

        # Chatter in the finished thread wakes nobody: it is not even enqueued.
        await eventually(lambda: _deliveries(gw, THREAD, 2))
        before = await gw.rt.redis.xlen(gw.rt.keys.inbound(0))
        await gw.event(message("thanks!", ts="1710000090.000100", thread_ts=MENTION_TS), "Ev3")
        assert await gw.rt.redis.xlen(gw.rt.keys.inbound(0)) == before


async def _deliveries(gw: Gateway, conversation: str, n: int) -> bool:
    thread = await gw.thread(conversation)
    return sum(e.type == "delivery" for e in thread.events) >= n


async def test_someone_else_cannot_answer_and_is_told_privately(redis_url, prefix):
    async with gateway(redis_url, prefix, EchoAgent()) as gw:
        await gw.event(mention("help", ts=MENTION_TS), "Ev1")
        await eventually(lambda: gw.status(THREAD, "waiting_human"))
        await gw.event(message("I'll answer for them", ts="1710000010.000100", user="U2", thread_ts=MENTION_TS), "Ev2")
        [note] = await eventually(lambda: gw.fake.to("chat.postEphemeral"))
        assert note["user"] == "U2" and note["channel"] == "C1" and note["thread_ts"] == MENTION_TS
        thread = await gw.thread(THREAD)
        assert thread.status == "waiting_human"
        assert len(gw.fake.posts()) == 1  # the question only: nothing said in the thread for everyone

        await gw.event(message("my answer", ts="1710000020.000100", thread_ts=MENTION_TS), "Ev3")
        await eventually(lambda: gw.fake.posts(text="ok: my answer"))


async def test_a_dm_is_answered_in_place_and_resumed_from_the_dm(redis_url, prefix):
    async with gateway(redis_url, prefix, EchoAgent()) as gw:
        await gw.event(message("hello bot", ts="1710000100.000100", channel="D1"), "Ev1")
        [question] = await eventually(lambda: gw.fake.posts(channel="D1"))
        assert question["thread_ts"] == "1710000100.000100"
        await eventually(lambda: gw.status(f"{TEAM}/D1", "waiting_human"))
        # Answered at the DM's root, not in the Slack thread: the DM is one conversation.
        await gw.event(message("just checking", ts="1710000110.000100", channel="D1"), "Ev2")
        [answer] = await eventually(lambda: gw.fake.posts(text="ok: just checking"))
        assert answer["channel"] == "D1" and answer["thread_ts"] == "1710000110.000100"
        await eventually(lambda: gw.status(f"{TEAM}/D1", "done"))


async def test_approval_buttons_only_approvers_decide_once(redis_url, prefix):
    async with gateway(redis_url, prefix, ApprovalAgent()) as gw:
        await gw.event(mention("1.2.3", ts=MENTION_TS), "Ev1")
        [request] = await eventually(lambda: [p for p in gw.fake.posts() if p.get("blocks")])
        assert request["thread_ts"] == MENTION_TS
        await eventually(lambda: gw.status(THREAD, "waiting_approval"))
        approve = next(b for b in request["blocks"][1]["elements"] if b["action_id"] == "frontdesk_approve")
        approval_ts = next(
            c.reply["ts"] for c in gw.fake.calls if c.method == "chat.postMessage" and c.args.get("blocks")
        )
        where = dict(channel="C1", message_ts=approval_ts, thread_ts=MENTION_TS, value=approve["value"], approved=True)

        # Not an approver: refused privately, nothing changes.
        await gw.click(user="U2", action_ts="1710000200.1", **where)
        [refusal] = await eventually(lambda: gw.fake.to("chat.postEphemeral"))
        assert refusal["user"] == "U2" and refusal["thread_ts"] == MENTION_TS
        thread = await gw.thread(THREAD)
        assert thread.status == "waiting_approval" and gw.fake.to("chat.update") == []

        # The person who asked approves: the message now says who decided, and the agent goes on.
        await gw.click(user="U1", action_ts="1710000210.1", **where)
        [update] = await eventually(lambda: gw.fake.to("chat.update"))
        assert update["ts"] == approval_ts and update["channel"] == "C1"
        assert update["text"].startswith("Approved by <@U1> at ")
        await eventually(lambda: gw.fake.posts(text="approved by slack:U1"))
        await eventually(lambda: gw.status(THREAD, "done"))

        # A second click changes nothing.
        await gw.click(user="U1", action_ts="1710000220.1", **where)
        await eventually(lambda: gw.has(THREAD, lambda e: e.type == "note" and e.kind == "stale_decision"))
        thread = await gw.thread(THREAD)
        assert thread.status == "done"
        assert [e.type for e in thread.events].count("approval_decision") == 1
        assert len(gw.fake.to("chat.update")) == 1 and len(gw.fake.posts()) == 2


async def test_a_429_is_waited_out_and_the_message_delivered_once(redis_url, prefix):
    async with gateway(redis_url, prefix, EchoAgent()) as gw:
        gw.fake.script(
            "chat.postMessage",
            Reply(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}),
        )
        await gw.event(mention("hi", ts=MENTION_TS), "Ev1")
        await eventually(lambda: gw.has(THREAD, lambda e: e.type == "delivery" and e.status == "sent"))
        assert len(gw.fake.posts(text="you said 'hi'?")) == 1
        assert len(gw.fake.to("chat.postMessage", ok=False)) == 1
        thread = await gw.thread(THREAD)
        assert [e.status for e in thread.events if e.type == "delivery"] == ["sent"]


async def test_no_answer_from_slack_that_cannot_be_looked_up_is_recorded_as_ambiguous_and_not_reposted(
    redis_url, prefix
):
    async with gateway(redis_url, prefix, EchoAgent(), slack_timeout=0.5) as gw:
        gw.fake.script("chat.postMessage", HANG)
        gw.fake.script("conversations.replies", Reply(status=200, body={"ok": False, "error": "missing_scope"}))
        await gw.event(mention("hi", ts=MENTION_TS), "Ev1")
        await eventually(lambda: gw.has(THREAD, lambda e: e.type == "delivery" and e.status == "ambiguous"))
        thread = await gw.thread(THREAD)
        assert thread.status == "waiting_human"
        assert len(gw.fake.to("chat.postMessage", ok=None)) == 1


async def test_a_thread_reply_without_a_valid_thread_is_a_recorded_failure(redis_url, prefix):
    async with gateway(redis_url, prefix, EchoAgent()) as gw:
        gw.fake.script("chat.postMessage", Reply(body={"ok": False, "error": "invalid_thread_ts"}))
        await gw.event(mention("hi", ts=MENTION_TS), "Ev1")
        await eventually(lambda: gw.status(THREAD, "failed"))
        thread = await gw.thread(THREAD)
        assert [e.status for e in thread.events if e.type == "delivery"] == ["failed"]
        assert gw.fake.posts() == []


async def test_an_agent_contacts_someone_by_dm_and_their_reply_resumes(redis_url, prefix):
    async with gateway(redis_url, prefix, EchoAgent()) as gw:
        r = await gw.http.post(
            "/api/v1/threads",
            json={"agent": "echo", "text": "is the build green?", "contact": {"channel": "slack", "address": "U7"}},
        )
        assert r.status_code == 201, r.text
        thread_id = r.json()["id"]
        [question] = await eventually(lambda: gw.fake.posts(channel="D7"))
        assert "thread_ts" not in question
        question_ts = next(c.reply["ts"] for c in gw.fake.calls if c.method == "chat.postMessage" and c.ok)
        await eventually(lambda: gw.rt.ingest.thread_for("slack", f"{TEAM}/D7/{question_ts}"))

        # The reply in the question's Slack thread finds the thread.
        await gw.event(message("green", ts="1710000300.000100", channel="D7", user="U7", thread_ts=question_ts), "Ev1")
        [answer] = await eventually(lambda: gw.fake.posts(text="ok: green"))
        assert answer["thread_ts"] == question_ts
        thread = await gw.rt.store.load(thread_id)
        await eventually(lambda: _done(gw.rt, thread_id))
        assert thread.events[0].type == "user_message"


async def _done(rt: Runtime, thread_id: str) -> bool:
    return (await rt.store.meta(thread_id)).get("status") == "done"


async def test_an_agent_posts_to_a_channel_and_a_thread_reply_resumes(redis_url, prefix, tmp_path):
    # A question asked of a channel may be answered by anyone writing in its thread.
    channel = "C5"
    async with gateway(redis_url, prefix, EchoAgent()) as gw:
        r = await gw.http.post(
            "/api/v1/threads",
            json={"agent": "echo", "text": "who is on call?", "contact": {"channel": "slack", "address": channel}},
        )
        assert r.status_code == 201, r.text
        [root] = await eventually(lambda: gw.fake.posts(channel=channel))
        assert "thread_ts" not in root
        root_ts = next(c.reply["ts"] for c in gw.fake.calls if c.method == "chat.postMessage" and c.ok)
        await eventually(lambda: gw.rt.ingest.thread_for("slack", f"{TEAM}/{channel}/{root_ts}"))
        await gw.event(message("bob", ts="1710000400.000100", channel=channel, user="U8", thread_ts=root_ts), "Ev1")
        [answer] = await eventually(lambda: gw.fake.posts(text="ok: bob"))
        assert answer["thread_ts"] == root_ts
