"""The real `humanlayer` SDK (0.7.9), sync and async, against a running frontdesk.

Only the two settings the SDK reads change (its base URL and key); the SDK's own poll
sleep is shortened so a test does not wait 3 s per poll. Slack is the fake on loopback,
and button clicks are signed as Slack signs them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import smtplib
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
import uvicorn
from aiosmtpd.smtp import SMTP
from helpers import background, eventually, make_settings
from humanlayer import (
    AsyncHumanLayer,
    ContactChannel,
    EmailContactChannel,
    EmailRecipient,
    Escalation,
    FunctionCallStatus,
    HumanContactSpec,
    HumanContactStatus,
    HumanLayer,
    HumanLayerException,
    ResponseOption,
    SlackContactChannel,
    SMSContactChannel,
    WhatsAppContactChannel,
)
from servers import LoopbackServer
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import channels.email as email_channel
import channels.slack as slack
import channels.sms as sms
import channels.webhook as webhook
import channels.whatsapp as whatsapp
from agents.humanlayer import HumanLayerAgent
from channels.slack.approvals import REASON
from gateway.humanlayer.service import thread_id
from gateway.outbox import Outbox
from gateway.runtime import Runtime, running
from gateway.web.app import create_app
from gateway.worker import Worker

_FAKES = str(Path(__file__).resolve().parents[1] / "channels")
if _FAKES not in sys.path:
    sys.path.append(_FAKES)
from fake_slack import SECRET, TEAM, TOKEN, FakeSlack, click, event_body, message, signed, submission  # noqa: E402
from fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio  # noqa: E402

API_TOKEN = "fd-api-token-for-tests"
HOOK_SECRET = "whsec_" + base64.b64encode(b"h" * 32).decode()
OUR_NUMBER, THEIR_NUMBER = "+15550000042", "+15551230001"
RELAY_ID = "mx.humanlayer.test"


def quick(_seconds) -> None:
    time.sleep(0.05)  # the SDK sleeps 3 s before every poll; the count of polls is not under test


async def aquick(_seconds) -> None:
    await asyncio.sleep(0.05)


@dataclass
class Relay:
    """The outbound mail relay: a real SMTP server recording each mail with its envelope recipients."""

    mail: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):
        self.mail.append((list(envelope.rcpt_tos), BytesParser(policy=policy.default).parsebytes(envelope.content)))
        return "250 2.0.0 queued"


@dataclass
class Providers:
    """What outlives a frontdesk restart: the fakes, the relay, and the port the SDK was told."""

    slack: FakeSlack
    twilio: FakeTwilio
    relay: Relay
    relay_port: int
    port: int


@dataclass
class Frontdesk:
    url: str
    rt: Runtime
    p: Providers
    http: httpx.AsyncClient
    smtp_port: int

    @property
    def fake(self) -> FakeSlack:
        return self.p.slack

    @property
    def base(self) -> str:
        return f"{self.url}/humanlayer/v1"

    def sdk(self, key: str = API_TOKEN, run_id: str = "run-1", sleep=quick) -> HumanLayer:
        return HumanLayer(api_key=key, api_base_url=self.base, sleep=sleep, run_id=run_id)

    def async_sdk(self, run_id: str = "run-2") -> AsyncHumanLayer:
        return AsyncHumanLayer(api_key=API_TOKEN, api_base_url=self.base, sleep=aquick, run_id=run_id)

    async def approval_post(self) -> dict:
        """The approval request where it was asked, not an approver's copy in a DM (D…): the outbox
        may send the copies in either order."""
        posts = await eventually(lambda: [p for p in self.fake.posts() if p.get("blocks") and p["channel"][0] != "D"])
        return posts[0]

    def posted_ts(self, post: dict) -> str:
        """The ts Slack answered for `post`."""
        return next(
            c.reply["ts"]
            for c in self.fake.calls
            if c.method == "chat.postMessage" and c.args.get("blocks") and c.args["channel"] == post["channel"]
        )

    async def click(self, post: dict, *, user: str, approved: bool, n: int, thread_ts: str | None = None) -> None:
        """`user` clicks Approve or Deny under the approval request `post` (posted in `thread_ts`, if given)."""
        button = next(b for b in post["blocks"][1]["elements"] if (b["action_id"] == "frontdesk_approve") == approved)
        await self._press(post, button, user=user, action_ts=f"1710000300.{n}", thread_ts=thread_ts)

    async def give_reason(self, user: str, reason: str) -> None:
        """`user` submits the reason modal a Deny click opened."""
        [view] = await eventually(lambda: list(self.fake.views.values()))
        state = {REASON: {REASON: {"type": "plain_text_input", "value": reason}}}
        payload = submission(view, user=user, values=state)
        raw = urlencode({"payload": json.dumps(payload)})
        headers = signed(raw, content_type="application/x-www-form-urlencoded")
        r = await self.http.post(f"{self.url}/slack/events", content=raw, headers=headers)
        assert r.status_code == 200 and r.content == b"", r.text  # an empty answer closes the modal

    async def pick(self, post: dict, choice: str, *, user: str, n: int) -> None:
        """`user` clicks the button for `choice` under the question `post`."""
        [button] = [b for b in post["blocks"][1]["elements"] if b["text"]["text"] == choice]
        await self._press(post, button, user=user, action_ts=f"1710000400.{n}")

    async def _press(
        self, post: dict, button: dict, *, user: str, action_ts: str, thread_ts: str | None = None
    ) -> None:
        """The block_actions request Slack sends for a click on `button`, signed."""
        ts = self.posted_ts(post)
        where = dict(user=user, channel=post["channel"], message_ts=ts, thread_ts=thread_ts, action_ts=action_ts)
        payload = json.loads(parse_qs(click(**where, value=button["value"], approved=True))["payload"][0])
        payload["actions"][0] |= {"action_id": button["action_id"], "block_id": post["blocks"][1]["block_id"]}
        raw = urlencode({"payload": json.dumps(payload)})
        headers = signed(raw, content_type="application/x-www-form-urlencoded")
        r = await self.http.post(f"{self.url}/slack/events", content=raw, headers=headers)
        assert r.status_code == 200, r.text

    async def say(self, event: dict, event_id: str) -> None:
        raw = json.dumps(event_body(event, event_id))
        r = await self.http.post(f"{self.url}/slack/events", content=raw, headers=signed(raw))
        assert r.status_code == 200, r.text

    async def mail(self, raw: str, *, to: str, sender: str) -> None:
        """`sender` writes `raw` to our address `to`, through frontdesk's own SMTP server."""
        data = raw.replace("\r\n", "\n").replace("\n", "\r\n").encode()

        def deliver():
            with smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test", timeout=20) as client:
                client.sendmail(sender, [to], data)

        await asyncio.to_thread(deliver)

    async def thread(self, kind: str, call_id: str):
        return await self.rt.store.load(thread_id(kind, call_id))  # type: ignore[arg-type]

    async def status(self, kind: str, call_id: str, status: str) -> bool:
        thread = await self.thread(kind, call_id)
        return thread is not None and thread.status == status


@contextlib.asynccontextmanager
async def providers() -> AsyncIterator[Providers]:
    relay = Relay()
    loop = asyncio.get_running_loop()
    sink = await loop.create_server(lambda: SMTP(relay, hostname="relay.test", loop=loop), "127.0.0.1", 0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a free port, kept for the frontdesk of this test (and its restart)
        port = sock.getsockname()[1]
    try:
        async with FakeSlack() as slack_fake, FakeTwilio() as twilio:
            yield Providers(slack_fake, twilio, relay, sink.sockets[0].getsockname()[1], port)
    finally:
        sink.close()
        await sink.wait_closed()


@contextlib.asynccontextmanager
async def frontdesk(redis_url: str, prefix: str, p: Providers | None = None, **overrides) -> AsyncIterator[Frontdesk]:
    if p is None:
        async with providers() as made, frontdesk(redis_url, prefix, made, **overrides) as fd:
            yield fd
        return
    url = f"http://127.0.0.1:{p.port}"
    values = dict(
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=p.slack.url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=p.twilio.url,
        twilio_from_number=OUR_NUMBER,
        smtp_port=0,
        smtp_relay=f"127.0.0.1:{p.relay_port}",
        email_token_secret="humanlayer-tests",
        # Approvals by mail need an authenticated sender (channels/email/auth.py): the relay in front says so.
        email_trusted_authserv_id=RELAY_ID,
        public_url=url,
        api_token=API_TOKEN,
        # A reply to a number no agent answers is refused before its thread is looked up (channel_context.accept);
        # a deployment has its default agent there (helpdesk), these tests load only the humanlayer one.
        default_agent="humanlayer",
    )
    settings = make_settings(redis_url, prefix, **{**values, **overrides})
    # WhatsApp reads its own settings (TWILIO_WHATSAPP_FROM, FRONTDESK_WHATSAPP_TEMPLATE*) from the environment.
    channels = [slack.channel, sms.channel, whatsapp.channel, email_channel.channel, webhook.channel]
    async with running(settings, agents=[lambda rt: HumanLayerAgent(rt)], builtins=False, channels=channels) as rt:
        config = uvicorn.Config(
            create_app(settings, rt), host="127.0.0.1", port=p.port, lifespan="on", ws="none", log_level="warning"
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        await eventually(lambda: server.started or serving.done())
        mail = rt.channels["email"]
        try:
            async with httpx.AsyncClient(timeout=10) as http, background(Worker(rt, "w1"), Outbox(rt, "o1")) as stop:
                smtp = asyncio.create_task(mail.serve(stop))
                await asyncio.wait_for(mail.listening.wait(), 10)
                yield Frontdesk(url, rt, p, http, mail.port)
            await smtp
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=15)


async def finished(call: asyncio.Task):
    """What the SDK call returned; a broken run fails here instead of polling forever (a bound, not a measure)."""
    return await asyncio.wait_for(call, 60)


def in_slack(channel: str = "C1", **kw) -> ContactChannel:
    return ContactChannel(slack=SlackContactChannel(channel_or_user_id=channel, **kw))


async def test_sync_decorator_approved_from_code_runs_the_function(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-sync1"

        @hl.require_approval(contact_channel=in_slack(context_about_channel_or_user="the ops channel"))
        def transfer(amount: int, to: str) -> str:
            return f"sent {amount} to {to}"

        result = asyncio.create_task(asyncio.to_thread(transfer, amount=5, to="bob"))
        post = await fd.approval_post()
        assert post["channel"] == "C1" and "transfer(amount=5, to='bob')" in post["text"]
        assert post["text"].startswith("Context: the ops channel")
        await eventually(lambda: fd.status("function_call", "call-sync1", "waiting_approval"))

        approver = fd.sdk(run_id="approver")
        answered = await asyncio.to_thread(
            approver.respond_to_function_call, "call-sync1", FunctionCallStatus(approved=True, comment="fine")
        )
        assert answered.status.approved is True and answered.status.responded_at is not None
        assert await finished(result) == "sent 5 to bob"

        thread = await fd.thread("function_call", "call-sync1")
        assert [e.type for e in thread.events if e.type not in ("delivery", "note")] == [
            "user_message",
            "approval_requested",
            "approval_decision",
            "done_for_now",
        ]
        [update] = await eventually(lambda: fd.fake.to("chat.update"))
        assert update["text"].startswith("Approved by api at ")

        # A second answer is refused, and the first stands.
        again = await fd.http.post(
            f"{fd.base}/agent/function_calls/call-sync1/respond",
            json={"approved": False, "comment": "changed my mind"},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert again.status_code == 409 and again.json() == {"detail": "call already has a response"}
        got = await asyncio.to_thread(hl.get_function_call, "call-sync1")
        assert got.status.approved is True and got.status.comment == "fine"

        # The dashboard and the API show it like any other thread.
        async with httpx.AsyncClient(base_url=fd.url) as browser:
            form = await browser.get("/dashboard/login")
            nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
            await browser.post("/dashboard/login", data={"token": API_TOKEN, "nonce": nonce, "next": "/"})
            assert thread.id in (await browser.get("/")).text
            page = await browser.get(f"/dashboard/threads/{thread.id}")
            assert page.status_code == 200 and "transfer" in page.text and "approval_decision" in page.text
        listed = await fd.http.get(f"{fd.url}/api/v1/threads", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert {"id": thread.id, "agent": "humanlayer", "status": "done"}.items() <= listed.json()["threads"][0].items()


async def test_async_denial_without_a_comment_reaches_the_llm_as_a_denial(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.async_sdk()
        hl.genid = lambda p: f"{p}-async1"

        @hl.require_approval(contact_channel=in_slack("C2", context_about_channel_or_user="the finance channel"))
        async def wire(amount: int) -> str:
            raise AssertionError("a denied call must not run")

        result = asyncio.create_task(wire(amount=100))
        await fd.approval_post()
        await eventually(lambda: fd.status("function_call", "call-async1", "waiting_approval"))
        await hl.respond_to_function_call("call-async1", FunctionCallStatus(approved=False))
        assert (
            await finished(result) == "User in the finance channel denied wire with message: denied (no comment given)"
        )


async def test_async_human_as_tool_configured_only_by_the_two_environment_variables(redis_url, prefix, monkeypatch):
    async with frontdesk(redis_url, prefix) as fd:
        monkeypatch.setenv("HUMANLAYER_API_BASE", fd.base)
        monkeypatch.setenv("HUMANLAYER_API_KEY", API_TOKEN)
        hl = AsyncHumanLayer(sleep=aquick)  # nothing else: the SDK reads both variables itself
        hl.genid = lambda p: f"{p}-asyncask1"
        ask = hl.human_as_tool(contact_channel=in_slack("C12"))
        answer = asyncio.create_task(ask("Which dashboard is broken?"))
        await eventually(lambda: fd.fake.posts(channel="C12"))
        root = next(
            c.reply["ts"] for c in fd.fake.calls if c.method == "chat.postMessage" and c.args["channel"] == "C12"
        )
        await eventually(lambda: fd.status("human_contact", "call-asyncask1", "waiting_human"))
        await fd.say(
            message("the billing one", ts="1710000800.000100", user="U4", channel="C12", thread_ts=root), "Ev1"
        )
        assert await finished(answer) == "the billing one"
        monkeypatch.setenv("HUMANLAYER_API_KEY", "wrong")
        with pytest.raises(HumanLayerException, match="401"):
            await AsyncHumanLayer(sleep=aquick).get_human_contact("call-asyncask1")


async def test_slack_buttons_only_allowed_responders_decide(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-slack1"

        @hl.require_approval(contact_channel=in_slack("C3", allowed_responder_ids=["U7"]))
        def drop_table(name: str) -> str:
            raise AssertionError("a denied call must not run")

        result = asyncio.create_task(asyncio.to_thread(drop_table, name="users"))
        post = await fd.approval_post()
        await eventually(lambda: fd.status("function_call", "call-slack1", "waiting_approval"))

        async def both_sent() -> bool:
            # A click finds its thread by the conversation a send recorded, after Slack answered it: as a
            # person would, click once the request (the channel's post and the DM copy) is recorded as sent.
            thread = await fd.thread("function_call", "call-slack1")
            return any(e.type == "delivery" and e.status == "sent" for e in thread.events)

        await eventually(both_sent)

        # Someone in the channel but not allowed: told privately, nothing changes.
        await fd.click(post, user="U9", approved=True, n=1)
        [refusal] = await eventually(lambda: fd.fake.to("chat.postEphemeral"))
        assert refusal["user"] == "U9"
        thread = await fd.thread("function_call", "call-slack1")
        assert thread.status == "waiting_approval" and fd.fake.to("chat.update") == []
        assert (await asyncio.to_thread(hl.get_function_call, "call-slack1")).status.approved is None

        # The allowed responder is also asked in a DM (conversations.open gave U7 the DM D7), in either order.
        assert sorted(p["channel"] for p in fd.fake.posts() if p.get("blocks")) == ["C3", "D7"]
        # Deny asks for a reason first (a modal); the reason is the denial's comment the SDK returns.
        await fd.click(post, user="U7", approved=False, n=2)
        assert (
            fd.fake.to("views.open") and (await fd.thread("function_call", "call-slack1")).status == "waiting_approval"
        )
        await fd.give_reason("U7", "not the users table")
        assert await finished(result) == "User denied drop_table with message: not the users table"
        updates = await eventually(lambda: fd.fake.to("chat.update"))
        assert all(u["text"].startswith("Denied by <@U7> at ") for u in updates)  # every copy says who decided
        got = await asyncio.to_thread(hl.get_function_call, "call-slack1")
        assert got.status.approved is False
        assert got.status.slack_message_ts == fd.posted_ts(post)


async def test_slack_channel_without_allowed_ids_anyone_there_approves(redis_url, prefix):
    # Several partitions: the click lands on its conversation's, the call's thread lives in its own.
    async with frontdesk(redis_url, prefix, partitions=3) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-slack2"
        keys, posted = fd.rt.keys, "1700000001.000100"  # the fake's first ts: the root of the approval's Slack thread
        assert keys.thread_partition(thread_id("function_call", "call-slack2")) != keys.conversation_partition(
            "slack", f"{TEAM}/C4/{posted}"
        )

        @hl.require_approval(contact_channel=in_slack("C4"))
        def restart(service: str) -> str:
            return f"restarted {service}"

        result = asyncio.create_task(asyncio.to_thread(restart, service="api"))
        post = await fd.approval_post()
        assert (
            fd.fake.to("chat.postMessage")[0]
            and next(c.reply["ts"] for c in fd.fake.calls if c.args.get("blocks")) == posted
        )
        await eventually(lambda: fd.status("function_call", "call-slack2", "waiting_approval"))
        await fd.click(post, user="U5", approved=True, n=1)
        assert await finished(result) == "restarted api"
        [update] = await eventually(lambda: fd.fake.to("chat.update"))
        assert update["text"].startswith("Approved by <@U5> at ")


async def test_human_as_tool_answered_from_code_with_an_option(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-ask1"
        options = [ResponseOption(name="yes", title="Yes please"), ResponseOption(name="no", prompt_fill="No thanks")]
        ask = hl.human_as_tool(contact_channel=in_slack("C5"), response_options=options)
        answer = asyncio.create_task(asyncio.to_thread(ask, "Deploy on Friday?"))
        [question] = await eventually(lambda: fd.fake.posts())
        assert "Deploy on Friday?" in question["text"] and "Yes please" in question["text"]
        await eventually(lambda: fd.status("human_contact", "call-ask1", "waiting_human"))
        await asyncio.to_thread(
            hl.respond_to_human_contact,
            "call-ask1",
            HumanContactStatus(response="after lunch", response_option_name="no"),
        )
        assert await finished(answer) == "after lunch"
        got = await asyncio.to_thread(hl.get_human_contact, "call-ask1")
        assert got.status.response_option_name == "no" and got.status.responded_at is not None


async def test_wire_rules_keys_duplicates_unknown_ids_and_secrets(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        # A wrong key: the decorator reports it and the function does not run; the body is JSON.
        wrong = fd.sdk(key="not-the-token")

        @wrong.require_approval(contact_channel=in_slack())
        def anything() -> str:
            raise AssertionError("must not run")

        said = await asyncio.to_thread(anything)
        assert said.startswith("Error fetching approval for anything: 401 Client Error")
        r = await fd.http.get(f"{fd.base}/project", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.headers["content-type"] == "application/json" and "detail" in r.json()
        assert fd.fake.posts() == []

        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        body = {
            "run_id": "run-9",
            "call_id": "call/odd|id",
            "spec": {
                "fn": "send",
                "kwargs": {"to": "x"},
                "channel": {"slack": {"channel_or_user_id": "C6", "bot_token": "xoxb-secret-of-theirs"}},
                "state": {"cursor": [1, 2, {"deep": None}], "n": 1.5},
            },
            "status": None,
        }
        # A trailing slash in the base (`//function_calls`) reaches the same route.
        first = await fd.http.post(f"{fd.base}//function_calls", json=body, headers=auth)
        assert first.status_code == 200, first.text
        created = first.json()
        assert created["call_id"] == "call/odd|id" and created["run_id"] == "run-9"
        assert created["spec"]["state"] == body["spec"]["state"]
        assert "bot_token" not in created["spec"]["channel"]["slack"]
        assert created["status"]["approved"] is None and created["status"]["requested_at"].endswith("Z")

        # A second create of the call returns the stored one; it never overwrites.
        changed = json.loads(json.dumps(body))
        changed["spec"]["kwargs"] = {"to": "someone else"}
        second = await fd.http.post(f"{fd.base}/function_calls", json=changed, headers=auth)
        assert second.status_code == 200 and second.json()["spec"]["kwargs"] == {"to": "x"}
        # Even one that could not be created now (no channel, and no default contact here).
        unroutable = {k: v for k, v in changed.items() if k != "spec"} | {"spec": {"fn": "send", "kwargs": {}}}
        third = await fd.http.post(f"{fd.base}/function_calls", json=unroutable, headers=auth)
        assert third.status_code == 200 and third.json()["spec"]["kwargs"] == {"to": "x"}
        unroutable["call_id"] = "call-never-made"
        refused = await fd.http.post(f"{fd.base}/function_calls", json=unroutable, headers=auth)
        assert refused.status_code == 422 and "FRONTDESK_HUMANLAYER_DEFAULT_CONTACT" in refused.json()["detail"]
        [post] = await eventually(lambda: fd.fake.posts())
        assert "someone else" not in post["text"]

        missing = await fd.http.get(f"{fd.base}/function_calls/call-nobody", headers=auth)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
        missing = await fd.http.post(
            f"{fd.base}/agent/human_contacts/call-nobody/respond", json={"response": "x"}, headers=auth
        )
        assert missing.status_code == 404

        # The customer's bot token is nowhere: not in the thread, not in what Slack was sent.
        thread = await fd.thread("function_call", "call/odd|id")
        assert "xoxb-secret-of-theirs" not in thread.model_dump_json()
        assert all(c.authorization == f"Bearer {TOKEN}" for c in fd.fake.calls)
        pending = await fd.http.get(f"{fd.base}/agent/function_calls/pending", headers=auth)
        assert [c["call_id"] for c in pending.json()["items"]] == ["call/odd|id"]

        # Creates of one call racing each other: one thread, one request posted, every answer the same call.
        racing = [
            fd.http.post(
                f"{fd.base}/function_calls",
                json={
                    "run_id": "run-9",
                    "call_id": "call-race",
                    "spec": {"fn": "f", "kwargs": {"n": n}, "channel": body["spec"]["channel"]},
                },
                headers=auth,
            )
            for n in range(6)
        ]
        answers = [r.json() for r in await asyncio.gather(*racing)]
        assert len({json.dumps(a["spec"]) for a in answers}) == 1
        await eventually(lambda: [p for p in fd.fake.posts() if "f(n=" in p["text"]])
        race = await fd.thread("function_call", "call-race")
        assert [e.type for e in race.events].count("approval_requested") == 1
        assert len([p for p in fd.fake.posts() if "f(n=" in p["text"]]) == 1

        # A base URL without the /humanlayer/v1 suffix (and with a trailing slash) reaches the same calls.
        bare = HumanLayer(api_key=API_TOKEN, api_base_url=f"{fd.url}/", sleep=quick, run_id="run-9")
        same = await asyncio.to_thread(bare.get_function_call, "call/odd|id")
        assert same.spec.kwargs == {"to": "x"} and same.status.approved is None


def reply_to(mail: EmailMessage, mid: str, text: str, *, sender: str) -> str:
    """A reply as a mail client writes it, through the relay in front of frontdesk that vouches for its sender."""
    quoted = "\n".join(f"> {line}" for line in mail.get_body(("plain",)).get_content().splitlines())
    domain = sender.rpartition("@")[2]
    return (
        f"Authentication-Results: {RELAY_ID}; dmarc=pass header.from={domain}\n"
        f"From: <{sender}>\nTo: {mail['Reply-To']}\nSubject: Re: {mail['Subject']}\nMessage-ID: <{mid}>\n"
        f"In-Reply-To: {mail['Message-ID']}\nReferences: {mail['Message-ID']}\n"
        f"Content-Type: text/plain; charset=utf-8\n\n{text}\n\nOn Mon, Jun 3, 2024, humanlayer wrote:\n\n{quoted}\n"
    )


async def test_email_question_goes_out_threaded_and_a_mail_reply_answers_it(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-mail1"
        channel = ContactChannel(
            email=EmailContactChannel(
                address="alice@example.com",
                additional_recipients=[
                    EmailRecipient(address="dave@example.com", field="to"),
                    EmailRecipient(address="bob@example.com", field="cc"),
                    EmailRecipient(address="carol@example.com", field="bcc"),
                ],
                subject="Re: Quarterly numbers",
                in_reply_to_message_id="<orig-1@example.com>",
                references_message_id="<root-0@example.com> <orig-1@example.com>",
                template="<p>{{ event.spec.msg }} ({{ type }}) <b>{{ event.spec.state.who }}</b></p>",
            )
        )
        ask = hl.human_as_tool(contact_channel=channel)
        answer = asyncio.create_task(asyncio.to_thread(ask, "Which quarter <first>?", "the LLM's own subject"))

        [(recipients, mail)] = await eventually(lambda: fd.p.relay.mail)
        assert sorted(recipients) == sorted(
            ["alice@example.com", "dave@example.com", "bob@example.com", "carol@example.com"]
        )
        assert mail["To"] == "alice@example.com, dave@example.com" and mail["Cc"] == "bob@example.com"
        assert mail["Bcc"] is None
        assert mail["Subject"] == "Re: Quarterly numbers"  # the channel's subject wins over the LLM's
        assert mail["In-Reply-To"] == "<orig-1@example.com>"
        assert mail["References"] == "<root-0@example.com> <orig-1@example.com>"
        assert "Which quarter <first>?" in mail.get_body(("plain",)).get_content()
        # The template is rendered with the documented variables, and what it shows is escaped.
        assert mail.get_body(("html",)).get_content().strip() == (
            "<p>Which quarter &lt;first&gt;? (v1beta2.human_contact) <b></b></p>"
        )

        await eventually(lambda: fd.status("human_contact", "call-mail1", "waiting_human"))
        await fd.mail(
            reply_to(mail, "r1@example.com", "Q3 please", sender="alice@example.com"),
            to=mail["Reply-To"],
            sender="alice@example.com",
        )
        assert await finished(answer) == "Q3 please"


async def test_email_approval_denied_by_reply_carries_the_comment(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-mail2"

        @hl.require_approval(
            contact_channel=ContactChannel(
                email=EmailContactChannel(address="ops@example.com", experimental_subject_line="Approve?")
            )
        )
        def rotate_keys(env: str) -> str:
            raise AssertionError("a denied call must not run")

        result = asyncio.create_task(asyncio.to_thread(rotate_keys, env="prod"))
        [(recipients, mail)] = await eventually(lambda: fd.p.relay.mail)
        assert recipients == ["ops@example.com"] and mail["Subject"] == "Approve?"
        assert "rotate_keys(env='prod')" in mail.get_body(("plain",)).get_content()
        await eventually(lambda: fd.status("function_call", "call-mail2", "waiting_approval"))

        # Someone else replying changes nothing.
        await fd.mail(
            reply_to(mail, "r0@example.com", "APPROVE", sender="mallory@example.com"),
            to=mail["Reply-To"],
            sender="mallory@example.com",
        )
        await eventually(lambda: _noted(fd, "function_call", "call-mail2", "refused"))
        assert (await asyncio.to_thread(hl.get_function_call, "call-mail2")).status.approved is None

        await fd.mail(
            reply_to(mail, "r1@example.com", "DENY too risky today", sender="ops@example.com"),
            to=mail["Reply-To"],
            sender="ops@example.com",
        )
        assert await finished(result) == "User denied rotate_keys with message: too risky today"


async def _noted(fd: Frontdesk, kind: str, call_id: str, note: str) -> bool:
    thread = await fd.thread(kind, call_id)
    return any(e.type == "note" and e.kind == note for e in thread.events)


async def test_sms_approval_and_question_answered_by_text(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-sms1"
        phone = ContactChannel(sms=SMSContactChannel(phone_number=THEIR_NUMBER))

        @hl.require_approval(contact_channel=phone)
        def refund(order: str) -> str:
            return f"refunded {order}"

        result = asyncio.create_task(asyncio.to_thread(refund, order="A-17"))
        [asked] = await eventually(lambda: fd.p.twilio.messages)
        assert (asked["To"], asked["From"]) == (THEIR_NUMBER, OUR_NUMBER) and "refund(order='A-17')" in asked["Body"]
        await eventually(lambda: fd.status("function_call", "call-sms1", "waiting_approval"))
        r = await fd.p.twilio.incoming(f"{fd.url}/twilio/sms", "SMin0001", THEIR_NUMBER, OUR_NUMBER, "Yes")
        assert r.status_code == 200
        assert await finished(result) == "refunded A-17"

        hl.genid = lambda p: f"{p}-sms2"
        ask = hl.human_as_tool(contact_channel=phone)
        answer = asyncio.create_task(asyncio.to_thread(ask, "Which size?"))
        await eventually(lambda: [m for m in fd.p.twilio.messages if "Which size?" in m["Body"]])
        await eventually(lambda: fd.status("human_contact", "call-sms2", "waiting_human"))
        await fd.p.twilio.incoming(f"{fd.url}/twilio/sms", "SMin0002", THEIR_NUMBER, OUR_NUMBER, "large")
        assert await finished(answer) == "large"

        # A denial giving one of the reject options as its reason names that option.
        hl.genid = lambda p: f"{p}-sms3"

        @hl.require_approval(contact_channel=phone, reject_options=[ResponseOption(name="later", title="Not now")])
        def cancel(order: str) -> str:
            raise AssertionError("a denied call must not run")

        result = asyncio.create_task(asyncio.to_thread(cancel, order="A-18"))
        [offer] = await eventually(lambda: [m for m in fd.p.twilio.messages if "cancel(order='A-18')" in m["Body"]])
        assert "Not now" in offer["Body"]
        await eventually(lambda: fd.status("function_call", "call-sms3", "waiting_approval"))
        await fd.p.twilio.incoming(f"{fd.url}/twilio/sms", "SMin0003", THEIR_NUMBER, OUR_NUMBER, "no, not now")
        assert await finished(result) == "User denied cancel with message: not now"
        got = await asyncio.to_thread(hl.get_function_call, "call-sms3")
        assert got.status.reject_option_name == "later"


WA_OURS, WA_THEIRS, WA_OTHER = f"whatsapp:{OUR_NUMBER}", f"whatsapp:{THEIR_NUMBER}", "whatsapp:+15551230002"
WA_TEMPLATE = "HX" + "3" * 32


@pytest.fixture
def whatsapp_sender(monkeypatch):
    """Our WhatsApp sender and the one template for every kind, configured as a deployment does."""
    monkeypatch.setenv("TWILIO_WHATSAPP_FROM", WA_OURS)
    monkeypatch.setenv("FRONTDESK_WHATSAPP_TEMPLATE", WA_TEMPLATE)


async def _whatsapp(fd: Frontdesk, sid: str, sender: str, body: str) -> None:
    """`sender` writes `body` on WhatsApp to our sender, signed as Twilio signs it."""
    r = await fd.p.twilio.incoming_whatsapp(f"{fd.url}/twilio/sms", sid, sender, WA_OURS, body)
    assert r.status_code == 200, r.text


def _to(fd: Frontdesk, address: str) -> list[dict[str, str]]:
    return [m for m in fd.p.twilio.messages if m["To"] == address]


async def test_whatsapp_approval_outside_the_window_goes_as_the_template_and_a_reply_denies(
    redis_url, prefix, whatsapp_sender
):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-wa1"
        phone = ContactChannel(whatsapp=WhatsAppContactChannel(phone_number=THEIR_NUMBER))

        @hl.require_approval(contact_channel=phone)
        def refund(order: str) -> str:
            raise AssertionError("a denied call must not run")

        result = asyncio.create_task(asyncio.to_thread(refund, order="A-17"))
        # They never wrote to us: outside the 24-hour window, only the configured template may go.
        [asked] = await eventually(lambda: _to(fd, WA_THEIRS))
        assert (asked["From"], asked["ContentSid"]) == (WA_OURS, WA_TEMPLATE) and "Body" not in asked
        text = json.loads(asked["ContentVariables"])["1"]
        assert "refund(order='A-17')" in text and "YES" in text
        await eventually(lambda: fd.status("function_call", "call-wa1", "waiting_approval"))

        async def deliveries() -> list:
            # The outcome is written to the thread after the send returns: wait for it, not for the fake.
            return [e for e in (await fd.thread("function_call", "call-wa1")).events if e.type == "delivery"]

        [delivery] = await eventually(deliveries)
        assert delivery.channel == "whatsapp" and delivery.status == "sent"

        # Someone else writing "approve" to the same sender starts a conversation of their own.
        await _whatsapp(fd, "SMwa0001", WA_OTHER, "approve")
        [told] = await eventually(lambda: _to(fd, WA_OTHER))
        assert told["Body"].startswith("This address takes no messages")
        assert await fd.status("function_call", "call-wa1", "waiting_approval")
        assert (await asyncio.to_thread(hl.get_function_call, "call-wa1")).status.approved is None

        await _whatsapp(fd, "SMwa0002", WA_THEIRS, "deny not before Monday")
        assert await finished(result) == "User denied refund with message: not before Monday"
        got = await asyncio.to_thread(hl.get_function_call, "call-wa1")
        assert got.status.approved is False and got.status.comment == "not before Monday"
        thread = await fd.thread("function_call", "call-wa1")
        [decision] = [e for e in thread.events if e.type == "approval_decision"]
        assert decision.by == f"whatsapp:{WA_THEIRS}"


async def test_whatsapp_inside_the_window_approval_and_question_are_free_text(redis_url, prefix, whatsapp_sender):
    async with frontdesk(redis_url, prefix) as fd:
        # They wrote first: the window with them is open, and what we send is plain text.
        await _whatsapp(fd, "SMwa0011", WA_THEIRS, "hello?")
        await eventually(lambda: _to(fd, WA_THEIRS))
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-wa2"
        phone = ContactChannel(whatsapp=WhatsAppContactChannel(phone_number=THEIR_NUMBER))

        @hl.require_approval(contact_channel=phone)
        def resend(invoice: str) -> str:
            return f"resent {invoice}"

        result = asyncio.create_task(asyncio.to_thread(resend, invoice="INV-9"))
        [asked] = await eventually(lambda: [m for m in _to(fd, WA_THEIRS) if "resend(" in m.get("Body", "")])
        assert asked["From"] == WA_OURS and "ContentSid" not in asked and "Window" not in asked
        assert "resend(invoice='INV-9')" in asked["Body"]
        await eventually(lambda: fd.status("function_call", "call-wa2", "waiting_approval"))
        await _whatsapp(fd, "SMwa0012", WA_THEIRS, "approve")
        assert await finished(result) == "resent INV-9"

        hl.genid = lambda p: f"{p}-wa3"
        ask = hl.human_as_tool(contact_channel=phone)
        answer = asyncio.create_task(asyncio.to_thread(ask, "Which colour?"))
        [question] = await eventually(lambda: [m for m in _to(fd, WA_THEIRS) if "Which colour?" in m.get("Body", "")])
        assert "ContentSid" not in question
        await eventually(lambda: fd.status("human_contact", "call-wa3", "waiting_human"))
        # Another number's answer is not theirs: it starts a conversation of its own.
        await _whatsapp(fd, "SMwa0013", WA_OTHER, "red")
        await eventually(lambda: _to(fd, WA_OTHER))
        assert (await asyncio.to_thread(hl.get_human_contact, "call-wa3")).status.response is None
        assert await fd.status("human_contact", "call-wa3", "waiting_human")
        await _whatsapp(fd, "SMwa0014", WA_THEIRS, "dark green")
        assert await finished(answer) == "dark green"
        got = await asyncio.to_thread(hl.get_human_contact, "call-wa3")
        assert got.status.response == "dark green"


async def test_whatsapp_numbers_the_sdk_may_send_and_the_ones_refused(redis_url, prefix, whatsapp_sender, monkeypatch):
    auth = {"Authorization": f"Bearer {API_TOKEN}"}

    def body(call_id: str, number: str) -> dict:
        channel = {"whatsapp": {"phone_number": number}}
        return {"run_id": "r", "call_id": call_id, "spec": {"fn": "f", "kwargs": {}, "channel": channel}}

    async with frontdesk(redis_url, prefix) as fd:
        # Written as Twilio writes it, the number reaches the same person as the bare E.164 one.
        r = await fd.http.post(f"{fd.base}/function_calls", json=body("prefixed", WA_THEIRS), headers=auth)
        assert r.status_code == 200, r.text
        [asked] = await eventually(lambda: _to(fd, WA_THEIRS))
        assert asked["ContentSid"] == WA_TEMPLATE
        await eventually(lambda: fd.status("function_call", "prefixed", "waiting_approval"))

        # Not a number: refused with the reason, no call stored, nothing sent.
        r = await fd.http.post(f"{fd.base}/function_calls", json=body("bad", "555-1234"), headers=auth)
        assert r.status_code == 422 and "not a WhatsApp address" in r.json()["detail"], r.text
        assert (await fd.http.get(f"{fd.base}/function_calls/bad", headers=auth)).status_code == 404
        assert len(fd.p.twilio.messages) == 1

    monkeypatch.delenv("TWILIO_WHATSAPP_FROM")
    async with frontdesk(redis_url, prefix) as fd:  # no sender to write first from: refused, saying which setting
        r = await fd.http.post(f"{fd.base}/function_calls", json=body("unsent", THEIR_NUMBER), headers=auth)
        assert r.status_code == 422 and "TWILIO_WHATSAPP_FROM" in r.json()["detail"], r.text
        assert (await fd.http.get(f"{fd.base}/function_calls/unsent", headers=auth)).status_code == 404
        assert fd.p.twilio.messages == []


class Gate:
    """The SDK's sleep between polls, which a test can hold shut (while frontdesk restarts)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.waiting = threading.Event()
        self.polls = 0

    def sleep(self, _seconds) -> None:
        self.polls += 1
        if not self.open.is_set():
            self.waiting.set()
            self.open.wait(30)
        time.sleep(0.05)


async def test_a_restart_while_the_sdk_polls_loses_nothing(redis_url, prefix):
    gate = Gate()
    async with providers() as p:
        async with frontdesk(redis_url, prefix, p) as fd:
            hl = fd.sdk(sleep=gate.sleep)
            hl.genid = lambda p: f"{p}-restart1"

            @hl.require_approval(contact_channel=in_slack("C8"))
            def migrate(step: int) -> str:
                return f"migrated {step}"

            result = asyncio.create_task(asyncio.to_thread(migrate, step=3))
            post = await fd.approval_post()
            await eventually(lambda: gate.polls >= 2)  # polled at least once
            gate.open.clear()
            await eventually(gate.waiting.is_set)  # between two polls: frontdesk goes away
        r = await asyncio.to_thread(_refused, p.port)
        assert r, "the first frontdesk still answers"

        async with frontdesk(redis_url, prefix, p) as fd:
            await fd.click(post, user="U3", approved=True, n=1)
            await eventually(lambda: fd.status("function_call", "call-restart1", "done"))
            gate.open.set()
            assert await finished(result) == "migrated 3"
            [update] = await eventually(lambda: fd.fake.to("chat.update"))
            assert update["text"].startswith("Approved by <@U3> at ")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


class Receiver:
    """A customer's webhook endpoint: records what it is sent, with the headers."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hooks/{name}", self._post, methods=["POST"])])

    async def _post(self, request: Request) -> JSONResponse:
        self.got.append((dict(request.headers), await request.body()))
        return JSONResponse({"ok": True})

    def verified(self) -> list[dict]:
        """Every body, each checked against its Standard Webhooks signature (a bad one raises)."""
        return [Webhook(HOOK_SECRET).verify(body, headers) for headers, body in self.got]


async def test_completion_webhooks_are_signed_v1beta2_envelopes_to_every_url(redis_url, prefix):
    receiver = Receiver()
    with LoopbackServer(receiver.app) as hooks:
        urls = f"{hooks.url}/hooks/a, {hooks.url}/hooks/b"
        overrides = dict(humanlayer_webhook_urls=urls, webhook_secret=HOOK_SECRET, callback_allow_private=True)
        async with frontdesk(redis_url, prefix, **overrides) as fd:
            hl = fd.sdk()
            hl.genid = lambda p: f"{p}-hook1"

            @hl.require_approval(contact_channel=in_slack("C9"))
            def ship(box: int) -> str:
                return f"shipped {box}"

            result = asyncio.create_task(asyncio.to_thread(ship, box=4))
            await eventually(lambda: fd.status("function_call", "call-hook1", "waiting_approval"))
            await fd.http.post(
                f"{fd.base}/agent/function_calls/call-hook1/respond",
                json={"approved": True, "comment": "go"},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            )
            assert await finished(result) == "shipped 4"
            await eventually(lambda: len(receiver.got) == 2)
            first, second = receiver.verified()
            assert first == second
            assert first["type"] == "function_call.completed" and first["is_test"] is False
            call = first["event"]
            assert call["call_id"] == "call-hook1" and call["run_id"] == "run-1"
            assert call["spec"]["fn"] == "ship" and call["spec"]["kwargs"] == {"box": 4}
            assert call["status"]["approved"] is True and call["status"]["comment"] == "go"
            assert len({h["webhook-id"] for h, _ in receiver.got}) == 2  # one message id per receiver

            hl.genid = lambda p: f"{p}-hook2"
            state = {"ticket": 42, "tags": ["a", "b"]}
            contact = await asyncio.to_thread(
                hl.create_human_contact,
                HumanContactSpec(msg="Ready?", channel=in_slack("C9"), state=state),
            )
            assert contact.spec.state == state
            await eventually(lambda: fd.status("human_contact", "call-hook2", "waiting_human"))
            await asyncio.to_thread(hl.respond_to_human_contact, "call-hook2", HumanContactStatus(response="yes"))
            await eventually(lambda: len(receiver.got) == 4)
            done = receiver.verified()[2]
            assert done["type"] == "human_contact.completed"
            assert done["event"]["spec"]["state"] == state and done["event"]["status"]["response"] == "yes"


async def test_escalate_email_asks_again_and_the_new_address_may_answer(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-esc1"
        first = EmailContactChannel(address="ops@example.com", subject="Approve the purge?")

        @hl.require_approval(contact_channel=ContactChannel(email=first))
        def purge(days: int) -> str:
            return f"purged {days} days"

        result = asyncio.create_task(asyncio.to_thread(purge, days=30))
        await eventually(lambda: fd.status("function_call", "call-esc1", "waiting_approval"))
        await eventually(lambda: len(fd.p.relay.mail) == 1)

        escalation = Escalation(
            escalation_msg="Still waiting: please decide today.",
            additional_recipients=[EmailRecipient(address="team@example.com", field="cc")],
            channel=ContactChannel(email=EmailContactChannel(address="boss@example.com")),
        )
        still = await asyncio.to_thread(hl.escalate_email_function_call, "call-esc1", escalation)
        assert still.status.approved is None
        [(recipients, mail)] = await eventually(lambda: fd.p.relay.mail[1:])
        assert sorted(recipients) == ["boss@example.com", "team@example.com"] and mail["Cc"] == "team@example.com"
        text = mail.get_body(("plain",)).get_content()
        assert text.startswith("Still waiting: please decide today.") and "purge(days=30)" in text
        assert (await fd.thread("function_call", "call-esc1")).status == "waiting_approval"

        await fd.mail(
            reply_to(mail, "r1@example.com", "approve", sender="boss@example.com"),
            to=mail["Reply-To"],
            sender="boss@example.com",
        )
        assert await finished(result) == "purged 30 days"
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        late = await fd.http.post(
            f"{fd.base}/agent/function_calls/call-esc1/escalate_email", json={"escalation_msg": "again"}, headers=auth
        )
        assert late.status_code == 409

        # A call with no email anywhere has nowhere to escalate to.
        body = {
            "run_id": "r",
            "call_id": "slack-only",
            "spec": {"fn": "f", "kwargs": {}, "channel": {"slack": {"channel_or_user_id": "C1"}}},
        }
        assert (await fd.http.post(f"{fd.base}/function_calls", json=body, headers=auth)).status_code == 200
        await eventually(lambda: fd.status("function_call", "slack-only", "waiting_approval"))
        nowhere = await fd.http.post(
            f"{fd.base}/agent/function_calls/slack-only/escalate_email", json={"escalation_msg": "hi"}, headers=auth
        )
        assert nowhere.status_code == 422 and "no email channel" in nowhere.json()["detail"]


async def test_slack_question_answered_by_a_choice_button_or_a_threaded_reply(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-pick1"
        options = [ResponseOption(name="yes", title="Yes please"), ResponseOption(name="no", prompt_fill="No thanks")]
        channel = in_slack("C5", allowed_responder_ids=["U7"])
        ask = hl.human_as_tool(contact_channel=channel, response_options=options)
        answer = asyncio.create_task(asyncio.to_thread(ask, "Deploy on Friday?"))
        [post] = await eventually(lambda: [p for p in fd.fake.posts() if p.get("blocks")])
        assert [b["text"]["text"] for b in post["blocks"][1]["elements"]] == ["Yes please", "no"]
        await eventually(lambda: fd.status("human_contact", "call-pick1", "waiting_human"))

        await fd.pick(post, "Yes please", user="U9", n=1)  # not allowed: nothing changes
        await eventually(lambda: fd.fake.to("chat.postEphemeral"))
        assert (await asyncio.to_thread(hl.get_human_contact, "call-pick1")).status.response is None
        await fd.pick(post, "no", user="U7", n=2)
        assert await finished(answer) == "No thanks"  # the option's prompt_fill: what the LLM reads
        got = await asyncio.to_thread(hl.get_human_contact, "call-pick1")
        assert got.status.response_option_name == "no"

        # No allowed list: anyone in the channel answers, in the message's Slack thread.
        hl.genid = lambda p: f"{p}-reply1"
        ask = hl.human_as_tool(contact_channel=in_slack("C6"))
        answer = asyncio.create_task(asyncio.to_thread(ask, "Which region?"))
        [question] = await eventually(lambda: fd.fake.posts(channel="C6"))
        root = next(
            c.reply["ts"] for c in fd.fake.calls if c.method == "chat.postMessage" and c.args["channel"] == "C6"
        )
        await eventually(lambda: fd.status("human_contact", "call-reply1", "waiting_human"))
        await fd.say(message("eu-west-1", ts="1710000500.000100", user="U4", channel="C6", thread_ts=root), "Ev1")
        assert await finished(answer) == "eu-west-1"


async def test_a_null_channel_goes_to_the_configured_default_contact(redis_url, prefix):
    async with frontdesk(redis_url, prefix, humanlayer_default_contact="slack:C10") as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-default1"

        @hl.require_approval()
        def tidy() -> str:
            return "tidied"

        result = asyncio.create_task(asyncio.to_thread(tidy))
        post = await fd.approval_post()
        assert post["channel"] == "C10"
        await eventually(lambda: fd.status("function_call", "call-default1", "waiting_approval"))
        await fd.click(post, user="U2", approved=True, n=1)
        assert await finished(result) == "tidied"

    async with frontdesk(redis_url, prefix) as fd:  # no default: the create is refused, with the reason
        r = await fd.http.post(
            f"{fd.base}/function_calls",
            json={"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}, "channel": None}},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert r.status_code == 422 and "FRONTDESK_HUMANLAYER_DEFAULT_CONTACT" in r.json()["detail"]


async def test_asked_inside_an_existing_slack_thread_the_answer_there_counts(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-inthread1"
        where = in_slack("C11", thread_ts="1710000600.000100")

        @hl.require_approval(contact_channel=where)
        def archive(project: str) -> str:
            return f"archived {project}"

        result = asyncio.create_task(asyncio.to_thread(archive, project="apollo"))
        post = await fd.approval_post()
        assert post["channel"] == "C11" and post["thread_ts"] == "1710000600.000100"
        await eventually(lambda: fd.status("function_call", "call-inthread1", "waiting_approval"))
        await fd.click(post, user="U3", approved=True, n=1, thread_ts="1710000600.000100")
        assert await finished(result) == "archived apollo"

        hl.genid = lambda p: f"{p}-inthread2"
        ask = hl.human_as_tool(contact_channel=where)
        answer = asyncio.create_task(asyncio.to_thread(ask, "Keep the logs?"))
        await eventually(lambda: fd.fake.posts(text="Keep the logs?"))
        await eventually(lambda: fd.status("human_contact", "call-inthread2", "waiting_human"))
        reply = message("yes, 30 days", ts="1710000700.000100", user="U4", channel="C11", thread_ts="1710000600.000100")
        await fd.say(reply, "Ev2")
        assert await finished(answer) == "yes, 30 days"
