"""SMS flows end to end: a fake Twilio calls our HTTP server with signed webhooks;
the real worker runs the agent and the real outbox sends through the twilio
package back to the fake, which then reports delivery with status callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from pathlib import Path

import pytest
import uvicorn
from helpers import background, eventually, make_settings
from plugins import ApprovalAgent, EchoAgent

import channels.sms as sms
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))
from fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

THEM, US, APPROVALS, FROM = "+15551230001", "+15559870000", "+15559870001", "+15550000042"


class Stack:
    def __init__(self, rt, fake: FakeTwilio, base: str) -> None:
        self.rt, self.fake, self.base = rt, fake, base
        self._n = 0

    async def text(self, body: str, *, to: str = US, sid: str | None = None):
        """Our person texts `body` to our number `to`."""
        self._n += 1
        return await self.fake.incoming(f"{self.base}/twilio/sms", sid or f"SMin{self._n:04d}", THEM, to, body)

    def running(self):
        return background(Worker(self.rt, "w1"), Outbox(self.rt, "o1"))

    async def only_thread(self):
        rows = await eventually(self.rt.store.list)
        assert len(rows) == 1
        return await self.rt.store.load(rows[0]["id"])

    def bodies(self) -> list[str]:
        return [m["Body"] for m in self.fake.messages]


@contextlib.asynccontextmanager
async def _serve(app, sock: socket.socket):
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done())
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def stack(redis_url, prefix, tmp_path):
    config = tmp_path / "frontdesk.toml"
    config.write_text(f'[agents.approver.routes]\nsms = ["{APPROVALS}"]\n')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with FakeTwilio() as fake:
            settings = make_settings(
                redis_url,
                prefix,
                config_path=config,
                default_agent="echo",
                twilio_account_sid=ACCOUNT_SID,
                twilio_auth_token=AUTH_TOKEN,
                twilio_api_url=fake.url,
                twilio_from_number=FROM,
                public_url=base,
            )
            async with running(
                settings, agents=[EchoAgent(), ApprovalAgent()], builtins=False, channels=[sms.channel]
            ) as rt:
                async with _serve(create_app(settings, rt), sock):
                    yield Stack(rt, fake, base)


async def test_question_reply_answer_in_the_same_conversation(stack):
    async with stack.running():
        r = await stack.text("hello")
        assert r.status_code == 200 and r.text.endswith("<Response />")
        await eventually(lambda: stack.bodies() == ["you said 'hello'?"])
        question = stack.fake.messages[0]
        assert (question["To"], question["From"]) == (THEM, US)
        await stack.text("blue")
        await eventually(lambda: stack.bodies() == ["you said 'hello'?", "ok: blue"])
        thread = await stack.only_thread()
        await eventually(lambda: _status(stack, thread.id, "done"))
    thread = await stack.rt.store.load(thread.id)
    said = [e.type for e in thread.events if e.type != "delivery"]
    assert said == ["user_message", "request_human_input", "human_response", "done_for_now"]
    assert thread.events[0].sender == f"sms:{THEM}" and thread.origin.conversation == f"{THEM}/{US}"


async def test_an_approval_by_text_asks_again_once_then_takes_yes(stack):
    async with stack.running():
        await stack.text("1.2.3", to=APPROVALS)
        await eventually(lambda: len(stack.bodies()) == 1)
        assert stack.bodies()[0] == "Approval needed: deploy(version='1.2.3')\n\nReply YES to approve or NO to deny."
        await stack.text("hmm, not sure", to=APPROVALS)
        await eventually(lambda: len(stack.bodies()) == 2)
        assert "YES" in stack.bodies()[1] and "NO" in stack.bodies()[1]
        await stack.text("  Yes ", to=APPROVALS)
        thread = await stack.only_thread()
        await eventually(lambda: _status(stack, thread.id, "done"))
        await eventually(lambda: len(stack.bodies()) == 4)
    assert {m["From"] for m in stack.fake.messages} == {APPROVALS}
    assert f"approved by sms:{THEM}" in stack.bodies()[2:]
    thread = await stack.rt.store.load(thread.id)
    decision = next(e for e in thread.events if e.type == "approval_decision")
    assert decision.approved and decision.by == f"sms:{THEM}"


async def test_after_stop_an_agent_message_is_not_sent(stack):
    await stack.text("hello")
    r = await stack.text("STOP")
    assert r.status_code == 200
    async with stack.running():
        thread = await stack.only_thread()
        await eventually(lambda: _status(stack, thread.id, "failed"))
    thread = await stack.rt.store.load(thread.id)
    failed = [e for e in thread.events if e.type == "delivery"]
    assert [(e.status, e.detail) for e in failed] == [("failed", "recipient opted out")]
    assert [e.text for e in thread.events if e.type == "user_message"] == ["hello"]  # STOP reached no agent
    assert stack.fake.calls == []


async def test_a_duplicate_message_sid_is_one_event(stack):
    first = await stack.text("hello", sid="SMsame")
    again = await stack.text("hello", sid="SMsame")
    assert first.status_code == again.status_code == 200 and first.text == again.text
    async with stack.running():
        await eventually(lambda: stack.bodies() == ["you said 'hello'?"])
        thread = await stack.only_thread()
    assert [e.type for e in thread.events].count("user_message") == 1


async def test_a_forged_signature_is_refused_and_nothing_is_enqueued(stack):
    params = {"MessageSid": "SMforged", "AccountSid": ACCOUNT_SID, "From": THEM, "To": US, "Body": "hello"}
    r = await stack.fake.webhook(f"{stack.base}/twilio/sms", params, token="guessed-token")
    assert r.status_code == 403
    async with stack.running():
        assert await stack.rt.redis.xlen(stack.rt.keys.inbound(0)) == 0
    assert await stack.rt.store.list() == [] and stack.fake.calls == []


async def test_a_long_message_is_split_into_numbered_segments_in_order(stack):
    words = " ".join(f"word{i:03d}" for i in range(300))  # 2,399 characters
    async with stack.running():
        await stack.text(words)
        await eventually(lambda: len(stack.bodies()) == 2)
    first, second = stack.bodies()
    assert first.startswith("(1/2) you said '") and second.startswith("(2/2) ")
    assert all(len(b) <= 1600 for b in stack.bodies())
    assert f"{first[6:]} {second[6:]}" == f"you said '{words}'?"


async def test_status_callbacks_land_on_the_thread(stack):
    async with stack.running():
        await stack.text("hello")
        await eventually(lambda: len(stack.fake.messages) == 1)
        message = stack.fake.messages[0]
        thread = await stack.only_thread()
        await eventually(lambda: _delivery(stack, thread.id, "sent"))  # the outbox's own record first
        assert message["StatusCallback"] == f"{stack.base}/twilio/status?o={thread.id}-1&t={thread.id}"
        assert await stack.fake.callback(message, "sent") == 204
        assert await stack.fake.callback(message, "delivered") == 204
        await eventually(lambda: _delivery(stack, thread.id, "delivered"))
        assert await stack.fake.callback(message, "undelivered", 30003) == 204
        await eventually(lambda: _status(stack, thread.id, "failed"))
        assert await stack.fake.callback(message, "delivered", token="forged") == 403
    thread = await stack.rt.store.load(thread.id)
    deliveries = [e for e in thread.events if e.type == "delivery"]
    assert {e.outbound_id for e in deliveries} == {f"{thread.id}-1"}
    assert [e.status for e in deliveries][-2:] == ["delivered", "failed"]
    assert next(e for e in deliveries if e.status == "delivered").detail == message["Sid"]
    assert "30003" in deliveries[-1].detail


async def _status(stack, thread_id: str, status: str) -> bool:
    return (await stack.rt.store.meta(thread_id)).get("status") == status


async def _delivery(stack, thread_id: str, status: str) -> bool:
    thread = await stack.rt.store.load(thread_id)
    return any(e.type == "delivery" and e.status == status for e in thread.events)


async def test_a_text_after_a_finished_thread_starts_a_new_one(stack):
    async with stack.running():
        await stack.text("hello")
        await eventually(lambda: len(stack.bodies()) == 1)
        await stack.text("blue")
        await eventually(lambda: len(stack.bodies()) == 2)
        first = await stack.only_thread()
        await eventually(lambda: _status(stack, first.id, "done"))
        await stack.text("a new question")
        await eventually(lambda: stack.bodies()[-1:] == ["you said 'a new question'?"])
        rows = await stack.rt.store.list()
    assert len(rows) == 2
    second = next(r["id"] for r in rows if r["id"] != first.id)
    old = await stack.rt.store.load(first.id)
    new = await stack.rt.store.load(second)
    assert [e.text for e in old.events if e.type == "user_message"] == ["hello"]
    assert [e.text for e in new.events if e.type == "user_message"] == ["a new question"]
    assert await stack.rt.ingest.thread_for("sms", f"{THEM}/{US}") == second
