"""Provider faults on every channel: each message is delivered once, or recorded as it stands.

For each channel the real channel code talks to a provider on loopback that
misbehaves in one way per thread — the thread's text names the fault, the
provider answers by it:

    ratelimit  429 with Retry-After (SMTP: 451), once     -> retried, sent
    error      500 (SMTP: 452), once                      -> retried, sent
    slow       an answer well inside the client timeout   -> sent
    timeout    no answer at all                           -> resend-safe: sent again, sent;
                                                             looked up (Slack): not there, sent again;
                                                             otherwise ambiguous, not sent again
    reset      acted on, then the connection dropped      -> resend-safe: sent again (same id);
                                                             looked up (Slack): found, sent once;
                                                             otherwise ambiguous, not sent again
    down       503 every time (SMTP: 554 at once)         -> dead-lettered with the reason

Slack and SMS cannot deduplicate a repeated send, email (Message-ID) and webhooks
(webhook-id) can. The fakes are tests/channels/fake_slack.py and fake_twilio.py;
the SMTP relay is an aiosmtpd server and the webhook receiver an aiohttp app,
both here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP
from helpers import background, eventually, make_settings
from plugins import ApprovalAgent, EchoAgent
from pydantic import SecretStr

import channels.email as email_channel
import channels.slack as slack_channel
import channels.sms as sms_channel
import channels.whatsapp as whatsapp_channel
from channels.webhook import channel as webhook_channel
from gateway.events import ApprovalChoice, InboundMessage
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))
from fake_slack import HANG, RESET, TEAM, TOKEN, FakeSlack, Reply
from fake_slack import SECRET as SLACK_SECRET
from fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio
from fake_twilio import Reply as TwilioReply

KINDS = ("ratelimit", "error", "slow", "timeout", "reset", "down")
ATTEMPTS = 3  # FRONTDESK_DELIVERY_ATTEMPTS
TIMEOUT = 0.5  # each provider client's timeout, where a setting has it
SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()


def fault_of(text: str) -> str | None:
    found = re.search(r"fault=(\w+)", text)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Outcome:
    status: str  # of the thread's delivery event: sent | ambiguous | failed
    attempts: int  # requests that reached the provider
    received: int  # of them, those the provider acted on (the person got it)


def expected(kind: str, resend_safe: bool, down_attempts: int = ATTEMPTS, looks_up: bool = False) -> Outcome:
    if looks_up and kind in ("timeout", "reset"):
        # The post names its outbound id (Slack message metadata): asked, Slack says whether it has it.
        return Outcome("sent", 2, 1) if kind == "timeout" else Outcome("sent", 1, 1)
    return {
        "ratelimit": Outcome("sent", 2, 1),
        "error": Outcome("sent", 2, 1),
        "slow": Outcome("sent", 1, 1),
        "timeout": Outcome("sent", 2, 1) if resend_safe else Outcome("ambiguous", 1, 0),
        "reset": Outcome("sent", 2, 2) if resend_safe else Outcome("ambiguous", 1, 1),
        "down": Outcome("failed", down_attempts, 0),
    }[kind]


class Provider:
    """What a fake provider saw, by fault: requests, and those it acted on."""

    def __init__(self) -> None:
        self.attempts: Counter = Counter()
        self.received: Counter = Counter()
        self.ids: dict[str, set[str]] = {}  # fault -> ids the provider was given (Message-ID, webhook-id)
        self.released = asyncio.Event()

    def attempt(self, text: str) -> tuple[str | None, int]:
        """(fault, how many earlier attempts it had) for a request carrying `text`."""
        kind = fault_of(text)
        n = self.attempts[kind]
        self.attempts[kind] += 1
        return kind, n

    async def hang(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.released.wait(), 60)


async def _run_cases(
    rt,
    start: Callable[[str, int], InboundMessage],
    provider: Provider,
    kinds,
    *,
    resend_safe: bool,
    down_attempts=ATTEMPTS,
    looks_up: bool = False,
) -> dict:
    """Start one echo thread per fault; once each has its delivery outcome, compare with `expected`."""
    ids = {}
    for i, kind in enumerate(kinds):
        ids[kind] = (await rt.ingest.accept(start(f"fault={kind}", i), "echo")).thread_id

    async def settled() -> bool:
        for tid in ids.values():
            thread = await rt.store.load(tid)
            if thread is None or not any(e.type == "delivery" for e in thread.events):
                return False
        return True

    async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
        await eventually(settled, timeout=60, interval=0.1)
        provider.released.set()
    seen = {}
    for kind, tid in ids.items():
        thread = await rt.store.load(tid)
        [delivery] = [e for e in thread.events if e.type == "delivery"]
        seen[kind] = Outcome(delivery.status, provider.attempts[kind], provider.received[kind])
        if delivery.status != "sent":
            assert delivery.detail, kind  # the reason is on the thread
        assert thread.status == ("failed" if delivery.status == "failed" else "waiting_human"), (kind, thread.status)
    dead = {fields["m"]: fields["reason"] for _, _, fields in await rt.streams.dlq_entries()}
    for kind, tid in ids.items():
        in_dlq = [reason for m, reason in dead.items() if f'"thread_id":"{tid}"' in m]
        # What was not sent stays retryable by a person: in the dead-letter stream, with its reason.
        assert len(in_dlq) == (seen[kind].status != "sent"), (kind, in_dlq)
    want = {kind: expected(kind, resend_safe, down_attempts, looks_up) for kind in kinds}
    print(
        f"\n{', '.join(rt.channels)}: "
        + "; ".join(f"{k}={o.status}/{o.attempts} tries/{o.received} received" for k, o in seen.items())
    )
    assert seen == want
    return ids


def _settings(redis_url, prefix, **values):
    return make_settings(redis_url, prefix, delivery_attempts=ATTEMPTS, default_agent="echo", rate_limit=0, **values)


# ---------------------------------------------------------------- Slack


def slack_rule(provider: Provider) -> Callable[[str, dict], Reply | None]:
    def rule(method: str, args: dict) -> Reply | None:
        if method != "chat.postMessage":
            return None
        kind, n = provider.attempt(args.get("text", ""))
        reply = None
        if kind == "ratelimit" and n == 0:
            reply = Reply(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"})
        elif kind == "error" and n == 0:
            reply = Reply(status=500, body={"ok": False, "error": "internal_error"})
        elif kind == "slow":
            reply = Reply(body=None, delay=TIMEOUT / 4)
        elif kind == "timeout" and n == 0:
            reply = HANG
        elif kind == "reset" and n == 0:
            reply = RESET
        elif kind == "down":
            reply = Reply(status=503, body={"ok": False, "error": "service_unavailable"})
        provider.received[kind] += reply is None or reply is RESET or reply.body is None
        return reply

    return rule


async def test_slack_provider_faults(redis_url, prefix):
    provider = Provider()
    async with FakeSlack() as fake:
        fake.rule = slack_rule(provider)
        values = dict(
            slack_bot_token=TOKEN, slack_signing_secret=SLACK_SECRET, slack_api_url=fake.url, slack_timeout=TIMEOUT
        )
        settings = _settings(redis_url, prefix, **values)
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack_channel.channel]) as rt:

            def start(text: str, i: int) -> InboundMessage:
                ts = f"17100000{i:02d}.000100"
                reply_to = {"team": TEAM, "channel": "C1", "thread_ts": ts}
                return InboundMessage(
                    id=f"Ev{i}",
                    channel="slack",
                    conversation=f"{TEAM}/C1/{ts}",
                    sender="U1",
                    text=text,
                    reply_to=reply_to,
                )

            await _run_cases(rt, start, provider, KINDS, resend_safe=False, looks_up=True)


# ---------------------------------------------------------------- SMS (Twilio)


def twilio_rule(provider: Provider) -> Callable[[dict], TwilioReply | None]:
    def rule(form: dict) -> TwilioReply | None:
        kind, n = provider.attempt(form.get("Body", ""))
        reply = None
        if kind == "ratelimit" and n == 0:
            reply = TwilioReply(status=429, code=20429, message="Too Many Requests", retry_after="1")
        elif kind == "error" and n == 0:
            reply = TwilioReply(status=500, code=20500, message="Internal Server Error")
        elif kind == "slow":
            reply = TwilioReply(delay=TIMEOUT / 4)
        elif kind == "timeout" and n == 0:
            reply = TwilioReply(hang=True)
        elif kind == "reset" and n == 0:
            reply = TwilioReply(reset=True)
        elif kind == "down":
            reply = TwilioReply(status=503, code=20503, message="Service Unavailable")
        provider.received[kind] += reply is None or reply.status < 400 and not reply.hang
        return reply

    return rule


@pytest.mark.parametrize("channel, scheme", [("sms", ""), ("whatsapp", "whatsapp:")])
async def test_twilio_provider_faults(redis_url, prefix, channel, scheme):
    """SMS and WhatsApp alike (one REST client); WhatsApp's replies inside the window, free text."""
    provider = Provider()
    async with FakeTwilio() as fake:
        fake.rule = twilio_rule(provider)
        settings = _settings(
            redis_url,
            prefix,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_api_url=fake.url,
            twilio_from_number="+15550000042",
            twilio_timeout=TIMEOUT,
        )
        channels = [sms_channel.channel, whatsapp_channel.channel]
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=channels) as rt:

            def start(text: str, i: int) -> InboundMessage:
                them, us = f"{scheme}+1555123{i:04d}", f"{scheme}+15559870000"
                fake.open_session(them, us)
                return InboundMessage(
                    id=f"SMin{i}",
                    channel=channel,
                    conversation=f"{them}/{us}",
                    sender=them,
                    address=us,
                    text=text,
                    reply_to={"to": them, "from": us},
                )

            await _run_cases(rt, start, provider, KINDS, resend_safe=False)


# ---------------------------------------------------------------- email (an SMTP relay)


class Relay:
    """An SMTP relay (aiosmtpd) answering each message by the fault its text names."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def handle_DATA(self, server, session, envelope) -> str:
        content = envelope.original_content.decode("utf-8", "replace")
        kind, n = self.provider.attempt(content)
        message_id = re.search(r"^Message-ID: (\S+)", content, re.M | re.I).group(1)
        self.provider.ids.setdefault(kind, set()).add(message_id)
        if kind == "ratelimit" and n == 0:
            return "451 4.7.1 Too many messages, slow down"
        if kind == "error" and n == 0:
            return "452 4.3.1 Insufficient system storage"
        if kind == "slow":
            await asyncio.sleep(TIMEOUT / 4)
        if kind == "timeout" and n == 0:
            await self.provider.hang()
            return "451 4.3.0 Too late"
        if kind == "down":
            return "554 5.3.0 Relay out of order"
        self.provider.received[kind] += 1
        if kind == "reset" and n == 0:
            server.transport.abort()  # took it, then the connection went
        return "250 2.0.0 Queued"


async def test_email_relay_faults(redis_url, prefix):
    provider = Provider()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Relay(provider), hostname="relay.test", loop=loop), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        settings = _settings(
            redis_url, prefix, smtp_relay=f"127.0.0.1:{port}", smtp_relay_timeout=TIMEOUT, smtp_relay_starttls=False
        )
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel]) as rt:

            def start(text: str, i: int) -> InboundMessage:
                mid = f"<root-{i}@example.com>"
                reply_to = {
                    "message_id": mid,
                    "references": [],
                    "subject": "faults",
                    "to": f"alice{i}@example.com",
                    "from": "echo@frontdesk.localhost",
                }
                return InboundMessage(
                    id=mid,
                    channel="email",
                    conversation=mid,
                    sender=f"alice{i}@example.com",
                    address="echo@frontdesk.localhost",
                    text=text,
                    reply_to=reply_to,
                )

            await _run_cases(rt, start, provider, KINDS, resend_safe=True, down_attempts=1)
    finally:
        provider.released.set()
        server.close()
        await server.wait_closed()
    # A message sent again is the same message: the receiver can tell by its Message-ID.
    assert all(len(ids) == 1 for ids in provider.ids.values()), provider.ids


# ---------------------------------------------------------------- webhook callbacks


@contextlib.asynccontextmanager
async def receiver(provider: Provider):
    async def hook(request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        kind, n = provider.attempt(payload["text"])
        provider.ids.setdefault(kind, set()).add(request.headers["webhook-id"])
        if kind == "ratelimit" and n == 0:
            return web.Response(status=429, headers={"Retry-After": "1"})
        if kind == "error" and n == 0:
            return web.Response(status=500)
        if kind == "slow":
            await asyncio.sleep(TIMEOUT / 4)
        if kind == "timeout" and n == 0:
            await provider.hang()
            return web.Response(status=504)
        if kind == "down":
            return web.Response(status=503)
        provider.received[kind] += 1
        if kind == "reset" and n == 0:
            request.transport.abort()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        provider.released.set()
        await runner.cleanup()


async def _webhook_faults(redis_url, prefix, kinds) -> None:
    provider = Provider()
    async with receiver(provider) as url:
        settings = _settings(redis_url, prefix, webhook_secret=SecretStr(SECRET), callback_allow_private=True)
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=[webhook_channel]) as rt:

            def start(text: str, i: int) -> InboundMessage:
                return InboundMessage(
                    id=f"wh{i}",
                    channel="webhook",
                    conversation=f"echo/wh{i}",
                    sender=url,
                    address="echo",
                    text=text,
                    reply_to={"callback_url": url},
                )

            await _run_cases(rt, start, provider, kinds, resend_safe=True)
    assert all(len(ids) == 1 for ids in provider.ids.values()), provider.ids  # one webhook-id per message


async def test_webhook_callback_faults(redis_url, prefix):
    # No answer at all takes the HTTP client's 10 s timeout: that case runs with `make chaos`.
    await _webhook_faults(redis_url, prefix, [k for k in KINDS if k != "timeout"])


@pytest.mark.slow
async def test_webhook_callback_that_never_answers_is_sent_again(redis_url, prefix):
    await _webhook_faults(redis_url, prefix, ["timeout"])


# ---------------------------------------------------------------- order within a thread


async def test_messages_of_one_thread_keep_their_order_when_the_first_is_retried(redis_url, prefix):
    """An approval's receipt and the final answer leave in one step; the receipt meets a 429."""
    arrived: list[tuple[str, int]] = []  # (payload type, HTTP status we answered)

    async def hook(request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        first_receipt = payload["type"] == "receipt" and not any(kind == "receipt" for kind, _ in arrived)
        status = 429 if first_receipt else 200
        arrived.append((payload["type"], status))
        return web.Response(status=status, headers={"Retry-After": "1"} if status == 429 else {})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        settings = _settings(redis_url, prefix, webhook_secret=SecretStr(SECRET), callback_allow_private=True)
        async with running(settings, agents=[ApprovalAgent()], builtins=False, channels=[webhook_channel]) as rt:
            said = dict(
                channel="webhook",
                conversation="approver/order",
                sender=url,
                address="approver",
                reply_to={"callback_url": url},
            )
            tid = (await rt.ingest.accept(InboundMessage(id="o1", text="v1.2", **said), "approver")).thread_id
            async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                await eventually(lambda: [k for k, s in arrived if s == 200] == ["approval"])
                decision = ApprovalChoice(call_id="call-1", approved=True)
                await rt.ingest.accept(InboundMessage(id="o2", text="approve", decision=decision, **said), "approver")
                await eventually(lambda: _delivered(rt, tid, 3), timeout=30)
    finally:
        await runner.cleanup()
    print(f"\nwebhook arrivals: {arrived}")
    assert [kind for kind, status in arrived if status == 200] == ["approval", "receipt", "final"]


async def _delivered(rt, tid: str, n: int) -> bool:
    thread = await rt.store.load(tid)
    return sum(e.type == "delivery" and e.status == "sent" for e in thread.events) >= n
