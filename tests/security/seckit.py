"""The whole gateway for security tests: every channel on, every secret set, fakes of the providers.

`stack()` opens FakeSlack and FakeTwilio on loopback, a runtime with the Slack,
SMS, webhook and email channels and the test agents, and serves our real app
over HTTP on 127.0.0.1. Requests are signed the way each provider signs them
(`Stack.slack_event`, `Stack.sms`, `Stack.webhook`), so a test reads as a person
or a provider talking to a deployed gateway.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import smtplib
import sys
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from fastapi import FastAPI
from helpers import background, eventually, make_settings
from plugins import ApprovalAgent, EchoAgent
from servers import app_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import channels.email as email_channel
import channels.slack as slack_channel
import channels.sms as sms_channel
import channels.webhook as webhook_channel
from channels.webhook import signature
from gateway.outbox import Outbox
from gateway.runtime import Runtime, running
from gateway.web.app import create_app
from gateway.worker import Worker

_CHANNEL_TESTS = str(Path(__file__).resolve().parents[1] / "channels")
if _CHANNEL_TESTS not in sys.path:  # the provider fakes live with the channel tests
    sys.path.append(_CHANNEL_TESTS)
import fake_slack  # noqa: E402
from fake_slack import FakeSlack, event_body, signed  # noqa: E402
from fake_twilio import ACCOUNT_SID, FakeTwilio  # noqa: E402
from fake_twilio import sign as twilio_sign  # noqa: E402

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"security-suite-webhook-secret!!!").decode()
API_TOKEN = "api-token-for-the-security-suite"
OUR_NUMBER, APPROVALS_NUMBER = "+15559870000", "+15559870001"
CHANNELS = [slack_channel.channel, sms_channel.channel, webhook_channel.channel, email_channel.channel]


@dataclass
class Stack:
    rt: Runtime
    app: FastAPI
    url: str
    http: httpx.AsyncClient
    slack: FakeSlack
    twilio: FakeTwilio
    signing_secret: str
    webhook_secret: str
    _n: list[int] = field(default_factory=lambda: [0])

    def _next(self) -> int:
        self._n[0] += 1
        return self._n[0]

    # ------------------------------------------------------------ providers talking to us
    async def slack_event(self, event: dict, event_id: str | None = None) -> httpx.Response:
        raw = json.dumps(event_body(event, event_id or f"Ev{self._next()}"))
        return await self.http.post("/slack/events", content=raw, headers=signed(raw, secret=self.signing_secret))

    async def slack_click(self, form: str) -> httpx.Response:
        headers = signed(form, secret=self.signing_secret, content_type="application/x-www-form-urlencoded")
        return await self.http.post("/slack/events", content=form, headers=headers)

    async def sms(self, sender: str, body: str, *, to: str = OUR_NUMBER, sid: str | None = None) -> httpx.Response:
        return await self.twilio.incoming(f"{self.url}/twilio/sms", sid or f"SMsec{self._next():05d}", sender, to, body)

    async def webhook(
        self, agent: str, payload: dict[str, Any], msg_id: str | None = None, *, secret: str | None = None
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        msg_id = msg_id or f"msg_sec{self._next()}"
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(secret or self.webhook_secret, msg_id, stamp, body),
        }
        return await self.http.post(f"/webhooks/{agent}", content=body, headers=headers)

    async def slack_approval(self, ts: str = "1710000100.000100", channel: str = "C2"):
        """A mention in the approver agent's channel, once its approval is posted: (thread, click placement)."""
        await self.slack_event(fake_slack.mention("1.2.3", ts=ts, channel=channel))
        approval = await self.thread_of("slack", f"{fake_slack.TEAM}/{channel}/{ts}")
        await self.wait_status(approval.id, "waiting_approval")
        posted = next(
            c
            for c in self.slack.calls
            if c.method == "chat.postMessage" and c.args.get("blocks") and c.args["channel"] == channel
        )
        value = json.dumps({"call_id": "call-1", "approved": True})
        where = dict(channel=channel, message_ts=posted.reply["ts"], thread_ts=ts, value=value, approved=True)
        return approval, where

    # ------------------------------------------------------------ reading state
    async def thread_of(self, channel: str, conversation: str):
        """The thread of a conversation, once a worker has written it."""
        thread_id = await eventually(lambda: self.rt.ingest.thread_for(channel, conversation))
        return await eventually(lambda: self.rt.store.load(thread_id))

    async def wait_status(self, thread_id: str, status: str) -> None:
        async def reached() -> bool:
            return (await self.rt.store.meta(thread_id)).get("status") == status

        await eventually(reached, timeout=30)

    def workers(self):
        return background(Worker(self.rt, "w1"), Outbox(self.rt, "o1"))


def stack_settings(redis_url: str, prefix: str, slack: FakeSlack, twilio: FakeTwilio, config: Path | None, **overrides):
    values: dict[str, Any] = dict(
        slack_bot_token=fake_slack.TOKEN,
        slack_signing_secret=fake_slack.SECRET,
        slack_api_url=slack.url,
        slack_ack_reaction="",
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api_url=twilio.url,
        twilio_from_number="+15550000042",
        webhook_secret=WEBHOOK_SECRET,
        callback_allow_private=True,
        api_token=API_TOKEN,
        default_agent="echo",
        config_path=config,
        smtp_port=0,
    )
    values.update(overrides)
    return make_settings(redis_url, prefix, **values)


@contextlib.asynccontextmanager
async def stack(
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    *,
    agents: list | None = None,
    config: str | None = None,
    twilio_token: str | None = None,
    **overrides,
) -> AsyncIterator[Stack]:
    """The gateway served over HTTP with every channel; workers are the test's to start (`Stack.workers`)."""
    path = None
    text = config if config is not None else f'[agents.approver.routes]\nsms = ["{APPROVALS_NUMBER}"]\nslack = ["C2"]\n'
    if text:
        path = tmp_path / "frontdesk.toml"
        path.write_text(text)
    twilio_kw = {"auth_token": twilio_token} if twilio_token else {}
    async with FakeSlack() as slack, FakeTwilio(ACCOUNT_SID, **twilio_kw) as twilio:
        settings = stack_settings(redis_url, prefix, slack, twilio, path, **overrides)
        agents = agents if agents is not None else [EchoAgent(), ApprovalAgent()]
        async with running(settings, agents=agents, builtins=False, channels=CHANNELS) as rt:
            app = create_app(settings, rt)
            async with app_server(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
                secret = settings.slack_signing_secret.get_secret_value()
                signing = settings.webhook_secret.get_secret_value().split(",")[0] if settings.webhook_secret else ""
                yield Stack(rt, app, url, http, slack, twilio, secret, signing)


@contextlib.asynccontextmanager
async def smtp_serving(rt: Runtime) -> AsyncIterator[int]:
    """The email channel's SMTP server in this loop; its port."""
    channel = rt.channels["email"]
    stop = asyncio.Event()
    task = asyncio.create_task(channel.serve(stop))
    await asyncio.wait_for(channel.listening.wait(), 10)
    try:
        yield channel.port
    finally:
        stop.set()
        await task


def signed_twilio(url: str, params: dict[str, str], token: str) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_sign(url, params, token)}


class Callbacks:
    """A webhook caller's callback endpoint on loopback: records what it is sent, answers as told."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.script: dict[str, list[int]] = {}  # path -> the next statuses to answer; the last repeats; default 200
        self.app = Starlette(routes=[Route("/{name}", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        path = request.url.path
        self.received.append({"path": path, "headers": dict(request.headers), **json.loads(await request.body())})
        statuses = self.script.get(path) or [200]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        # A redirect points at another path of ours: following it would show up in `received`.
        headers = {"Location": "/redirected"} if 300 <= status < 400 else None
        return JSONResponse({"ok": status < 300}, status_code=status, headers=headers)

    def to(self, path: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["path"] == path]


@dataclass
class Relay:
    """The outbound SMTP relay: a real aiosmtpd server that records each mail."""

    mail: list[EmailMessage] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    password: bytes | None = None

    async def handle_DATA(self, server, session, envelope):
        if self.replies:
            return self.replies.pop(0)
        self.mail.append(BytesParser(policy=policy.default).parsebytes(envelope.original_content))
        return "250 2.0.0 queued"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == self.password
        self.logins.append(
            (auth_data.login, auth_data.password) if isinstance(auth_data, LoginPassword) else (b"", b"")
        )
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.mail if m["To"] == address]


@contextlib.asynccontextmanager
async def relay(password: bytes | None = None) -> AsyncIterator[tuple[Relay, str]]:
    """A relay on loopback; (its recorder, host:port for FRONTDESK_SMTP_RELAY). With `password`, AUTH is required."""
    sink = Relay(password=password)
    loop = asyncio.get_running_loop()
    auth = dict(authenticator=sink.authenticate, auth_required=True, auth_require_tls=False) if password else {}

    def session() -> SMTP:
        with warnings.catch_warnings():  # plain-text AUTH is what this loopback fake is for
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(sink, hostname="relay.test", loop=loop, **auth)

    server = await loop.create_server(session, "127.0.0.1", 0)
    try:
        yield sink, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def mail_to(port: int, raw: str, *, mail_from: str, rcpt: str) -> tuple[int, bytes]:
    """Deliver one message to our SMTP server (smtplib, blocking: run it in a thread)."""
    data = raw.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as client:
        client.ehlo()
        client.mail(mail_from)
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text
        try:
            return client.data(data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


def reply_mail(to_mail: EmailMessage, mid: str, text: str, *, sender: str) -> str:
    """A reply to one of our mails as a mail client writes it: threading headers, then the new text."""
    ours = to_mail["Message-ID"]
    refs = f"{to_mail['References'] or ''} {ours}".strip()
    return (
        f"From: <{sender}>\nTo: {to_mail['Reply-To']}\nSubject: Re: {to_mail['Subject']}\nMessage-ID: <{mid}>\n"
        f"In-Reply-To: {ours}\nReferences: {refs}\nContent-Type: text/plain; charset=utf-8\n\n{text}\n"
    )
