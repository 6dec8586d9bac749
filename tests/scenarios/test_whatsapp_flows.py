"""WhatsApp flows end to end: a fake Twilio calls our HTTP server with signed webhooks
(the same /twilio/sms as SMS, addresses `whatsapp:+…`); the real worker runs the agent and
the real outbox sends through the twilio package back to the fake. The 24-hour window is
closed, where a test needs it, by ageing the channel's record of the last message (no waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest
import uvicorn
from helpers import background, eventually, make_settings
from plugins import ApprovalAgent, EchoAgent

import channels.sms as sms
from channels.whatsapp import WhatsAppChannel, WhatsAppSettings
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))
from fake_twilio import ACCOUNT_SID, AUTH_TOKEN, OUTSIDE_WINDOW, FakeTwilio, Reply

THEM, OTHER = "whatsapp:+15551230001", "whatsapp:+15551230002"
US, APPROVALS, FROM = "whatsapp:+15559870000", "whatsapp:+15559870001", "whatsapp:+15550000042"
QUESTION, APPROVAL = "HX" + "1" * 32, "HX" + "2" * 32
TEMPLATES = {"template_question": QUESTION, "template_approval": APPROVAL}


class Stack:
    def __init__(self, rt, fake: FakeTwilio, base: str) -> None:
        self.rt, self.fake, self.base = rt, fake, base
        self._n = 0

    async def write(self, body: str, *, sender: str = THEM, to: str = US, sid: str | None = None):
        """Our person writes `body` on WhatsApp to our sender `to`."""
        self._n += 1
        url = f"{self.base}/twilio/sms"
        return await self.fake.incoming_whatsapp(url, sid or f"SMwa{self._n:04d}", sender, to, body, profile_name="Ann")

    async def age_window(self, their: str = THEM, ours: str = US) -> None:
        """Their last message is now over 24 hours old, for us and for Twilio: the window closed."""
        await self.rt.channels["whatsapp"].window.close(their, ours)
        self.fake.sessions.discard((their, ours))

    def running(self):
        return background(Worker(self.rt, "w1"), Outbox(self.rt, "o1"))

    def worker(self):
        """The worker alone: replies are composed and wait on the outbox stream."""
        return background(Worker(self.rt, "w1"))

    async def threads(self, count: int = 1):
        rows = await eventually(lambda: _rows(self.rt, count))
        return [await self.rt.store.load(row["id"]) for row in rows]

    def sent(self) -> list[dict[str, str]]:
        return self.fake.messages


async def _rows(rt, count: int):
    rows = await rt.store.list()
    return sorted(rows, key=lambda row: row["id"]) if len(rows) == count else None


@contextlib.asynccontextmanager
async def _serve(app, sock: socket.socket):
    # ws="none": HTTP only; on "auto" uvicorn 0.31.1 (our floor) imports websockets.legacy, which warns.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done())
        yield
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def stack_with(redis_url, prefix, tmp_path, **own):
    config = tmp_path / "frontdesk.toml"
    config.write_text(f'[agents.approver.routes]\nwhatsapp = ["{APPROVALS.removeprefix("whatsapp:")}"]\n')
    own = {"from_number": FROM, **own}
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
                public_url=base,
            )
            channels = [sms.channel, lambda context: WhatsAppChannel(context, WhatsAppSettings(**own))]
            async with running(
                settings, agents=[EchoAgent(), ApprovalAgent()], builtins=False, channels=channels
            ) as rt:
                async with _serve(create_app(settings, rt), sock):
                    yield Stack(rt, fake, base)


@pytest.fixture
async def stack(redis_url, prefix, tmp_path):
    async with stack_with(redis_url, prefix, tmp_path, **TEMPLATES) as stack:
        yield stack


async def test_inbound_starts_a_thread_and_replies_inside_the_window_are_free_text(stack):
    async with stack.running():
        r = await stack.write("hello")
        assert r.status_code == 200 and r.text.endswith("<Response />")
        await eventually(lambda: [m.get("Body") for m in stack.sent()] == ["you said 'hello'?"])
        await stack.write("blue")
        await eventually(lambda: [m.get("Body") for m in stack.sent()] == ["you said 'hello'?", "ok: blue"])
        [thread] = await stack.threads()
        await eventually(lambda: _status(stack, thread.id, "done"))
    assert {(m["To"], m["From"]) for m in stack.sent()} == {(THEM, US)}
    assert not any("ContentSid" in m or "Window" in m for m in stack.sent())  # Twilio would deliver both
    thread = await stack.rt.store.load(thread.id)
    said = [e.type for e in thread.events if e.type != "delivery"]
    assert said == ["user_message", "request_human_input", "human_response", "done_for_now"]
    assert thread.events[0].sender == f"whatsapp:{THEM}" and thread.origin.conversation == f"{THEM}/{US}"
    assert thread.events[0].data == {"profile_name": "Ann"}


async def test_a_reply_outside_the_window_goes_as_the_kinds_template(stack):
    await stack.write("hello")
    async with stack.worker():
        [thread] = await stack.threads()
        await eventually(lambda: _status(stack, thread.id, "waiting_human"))
    assert await stack.rt.channels["whatsapp"].window.last(THEM, US) is not None  # their message opened it
    await stack.age_window()  # the reply waits a day: free text would be refused now
    async with stack.running():
        await eventually(lambda: len(stack.sent()) == 1)
    [message] = stack.sent()
    assert (message["To"], message["From"], message["ContentSid"]) == (THEM, US, QUESTION)
    assert "Body" not in message and "Window" not in message
    assert json.loads(message["ContentVariables"]) == {"1": "you said 'hello'?"}


async def test_outside_the_window_without_a_template_nothing_is_sent_and_the_thread_says_why(
    redis_url, prefix, tmp_path
):
    async with stack_with(redis_url, prefix, tmp_path) as stack:  # no templates
        await stack.write("hello")
        async with stack.worker():
            [thread] = await stack.threads()
            await eventually(lambda: _status(stack, thread.id, "waiting_human"))
        await stack.age_window()
        async with stack.running():  # the worker too: it writes the failure on the thread
            await eventually(lambda: _status(stack, thread.id, "failed"))
        thread = await stack.rt.store.load(thread.id)
        [delivery] = [e for e in thread.events if e.type == "delivery"]
        assert delivery.status == "failed" and delivery.channel == "whatsapp"
        assert "24-hour window" in delivery.detail and "FRONTDESK_WHATSAPP_TEMPLATE_QUESTION" in delivery.detail
        assert stack.fake.calls == []


async def test_a_63016_callback_fails_the_delivery_saying_why_and_closes_the_window(stack):
    await stack.write("hello")  # it opens our window record ...
    stack.fake.sessions.clear()  # ... but Twilio's closed: it takes the free text and fails it
    async with stack.running():
        await eventually(lambda: len(stack.sent()) == 1)
        [free] = stack.sent()
        assert free["Window"] == "closed" and free["Body"] == "you said 'hello'?"
        [thread] = await stack.threads()
        await eventually(lambda: _delivery(stack, thread.id, "sent"))
        assert await stack.fake.callback(free, "failed", OUTSIDE_WINDOW) == 204
        await eventually(lambda: _status(stack, thread.id, "failed"))
    thread = await stack.rt.store.load(thread.id)
    failed = next(e for e in thread.events if e.type == "delivery" and e.status == "failed")
    assert "63016" in failed.detail and "24-hour window" in failed.detail and "TEMPLATE" in failed.detail
    assert await stack.rt.channels["whatsapp"].window.last(THEM, US) is None  # the next message: a template


async def test_an_approval_is_taken_by_text_only_from_the_number_it_went_to(stack):
    async with stack.running():
        async with httpx.AsyncClient(base_url=stack.base) as client:
            contact = {"channel": "whatsapp", "address": THEM}
            r = await client.post("/api/v1/threads", json={"agent": "approver", "text": "1.2.3", "contact": contact})
            assert r.status_code == 201
            thread_id = r.json()["id"]
        # They never wrote: the request goes from our configured sender, as the approval template.
        await eventually(lambda: len(stack.sent()) == 1)
        request = stack.sent()[0]
        assert (request["To"], request["From"], request["ContentSid"]) == (THEM, FROM, APPROVAL)
        text = json.loads(request["ContentVariables"])["1"]
        assert text == "Approval needed: deploy(version='1.2.3') Reply YES to approve or NO to deny."
        await stack.write("APPROVE", sender=OTHER, to=FROM)  # someone else, on the same sender
        await stack.threads(2)  # ... starts a conversation of their own
        assert await _status(stack, thread_id, "waiting_approval")
        await stack.write("approve, ship it", sender=THEM, to=FROM)
        await eventually(lambda: _status(stack, thread_id, "done"))
    thread = await stack.rt.store.load(thread_id)
    [decision] = [e for e in thread.events if e.type == "approval_decision"]
    assert decision.approved and decision.by == f"whatsapp:{THEM}" and decision.comment == "ship it"


async def test_an_approval_written_to_another_of_our_senders_is_refused(stack):
    """The right person, but not to the sender the request went from (SECURITY.md, where an approval may come from)."""
    async with stack.running():
        async with httpx.AsyncClient(base_url=stack.base) as client:
            contact = {"channel": "whatsapp", "address": THEM}
            r = await client.post("/api/v1/threads", json={"agent": "approver", "text": "1.2.3", "contact": contact})
            thread_id = r.json()["id"]
        await eventually(lambda: len(stack.sent()) == 1)
        assert await _status(stack, thread_id, "waiting_approval")
        # The thread once wrote to THEM from US as well, so that pair reaches it too.
        await stack.rt.ingest.bind("whatsapp", f"{THEM}/{US}", thread_id)
        await stack.write("approve", sender=THEM, to=US)

        async def refused() -> bool:
            thread = await stack.rt.store.load(thread_id)
            return any(
                e.type == "note" and e.kind == "refused" and e.sender == f"whatsapp:{THEM}" for e in thread.events
            )

        await eventually(refused)
        assert await _status(stack, thread_id, "waiting_approval")
        await stack.write("approve", sender=THEM, to=FROM)
        await eventually(lambda: _status(stack, thread_id, "done"))


@pytest.mark.parametrize("refusal", [Reply(status=429, code=20429, retry_after="0"), Reply(status=503, code=20503)])
async def test_a_429_or_5xx_is_retried_and_the_person_gets_one_message(stack, refusal):
    stack.fake.answer_next(refusal)
    await stack.write("hello")
    async with stack.running():
        [thread] = await stack.threads()
        await eventually(lambda: _delivery(stack, thread.id, "sent"))
    creates = [c for c in stack.fake.calls if c["path"].endswith("/Messages.json")]
    assert len(creates) == 2  # the refused one, then the retry
    assert [m["Body"] for m in stack.sent()] == ["you said 'hello'?"]


async def test_a_duplicate_message_sid_is_one_event_and_one_reply(stack):
    first = await stack.write("hello", sid="SMsame")
    again = await stack.write("hello", sid="SMsame")
    assert first.status_code == again.status_code == 200 and first.text == again.text
    async with stack.running():
        await eventually(lambda: len(stack.sent()) == 1)
        [thread] = await stack.threads()
        await eventually(lambda: _status(stack, thread.id, "waiting_human"))
    thread = await stack.rt.store.load(thread.id)
    assert [e.type for e in thread.events].count("user_message") == 1


async def test_a_forged_signature_is_refused_and_nothing_is_enqueued(stack):
    r = await stack.fake.incoming_whatsapp(f"{stack.base}/twilio/sms", "SMforged", THEM, US, "hi", token="guess")
    assert r.status_code == 403
    async with stack.running():
        assert await stack.rt.redis.xlen(stack.rt.keys.inbound(0)) == 0
    assert await stack.rt.store.list() == [] and stack.fake.calls == []
    assert await stack.rt.channels["whatsapp"].window.last(THEM, US) is None


async def _status(stack, thread_id: str, status: str) -> bool:
    return (await stack.rt.store.meta(thread_id)).get("status") == status


async def _delivery(stack, thread_id: str, status: str) -> bool:
    thread = await stack.rt.store.load(thread_id)
    return any(e.type == "delivery" and e.status == status for e in thread.events)
