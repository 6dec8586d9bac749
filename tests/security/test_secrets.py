"""Secrets never show: not in logs, errors, thread events, dead letters, API answers or dashboard pages.

Every secret gets a distinctive value; then flows run on every channel, failure
paths included — a provider refusing our credentials or failing (401, 500, SMTP
535), the model API refusing the key and erring, bad signatures and wrong tokens
sent to us — with every log line captured as JSON at debug level. Afterwards each
secret (and the encodings it travels in: base64 of the webhook key, basic auth,
SMTP AUTH PLAIN) is looked for in the log, in every key under the deployment's
Redis prefix (threads, events, streams, dead letters), in every API answer and
dashboard page, and in what we sent to providers and callers.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
from pathlib import Path

import fake_slack
import httpx
import pytest
from fake_openai import FakeOpenAI, invalid_key, server_error
from fake_slack import Reply, mention, message, signed
from helpers import eventually
from plugins import EchoAgent
from seckit import Callbacks, mail_to, relay, reply_mail, signed_twilio, smtp_serving, stack
from servers import LoopbackServer

from agents.kit import Agent
from gateway.logs import configure_logging

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-SEKRET0001-slackbot",
    "SLACK_SIGNING_SECRET": "SEKRET0002-slack-signing",
    "TWILIO_AUTH_TOKEN": "SEKRET0003-twilio-auth",
    "FRONTDESK_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"SEKRET0004-webhook-key-32-bytes!").decode(),
    "FRONTDESK_API_TOKEN": "SEKRET0005-api-token",
    "OPENAI_API_KEY": "sk-SEKRET0006-openai-key",
    "FRONTDESK_SMTP_RELAY_PASSWORD": "SEKRET0007-relay-password",
    "FRONTDESK_EMAIL_TOKEN_SECRET": "SEKRET0008-mail-token-key",
}
RELAY_USER = "frontdesk"
THEM, OTHER, US = "+15551230001", "+15551230002", "+15559870000"
ALICE = "alice@example.com"


def needles(account_sid: str) -> dict[str, str]:
    """Each secret, and the encodings it could leak in."""
    found = dict(SECRETS)
    webhook_key = SECRETS["FRONTDESK_WEBHOOK_SECRET"].removeprefix("whsec_")
    found["webhook key (base64)"] = webhook_key
    found["webhook key (raw)"] = base64.b64decode(webhook_key).decode()
    found["twilio basic auth"] = base64.b64encode(f"{account_sid}:{SECRETS['TWILIO_AUTH_TOKEN']}".encode()).decode()
    found["smtp auth plain"] = base64.b64encode(
        f"\0{RELAY_USER}\0{SECRETS['FRONTDESK_SMTP_RELAY_PASSWORD']}".encode()
    ).decode()
    return found


@pytest.fixture
def captured_logs(settings):
    """Every log line, ours and the libraries', as JSON at debug level."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(settings.model_copy(update={"log_format": "json", "log_level": "debug"}), stream=buffer)
    try:
        yield buffer
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_frontdesk", False)]:
            root.removeHandler(handler)
        root.setLevel(level)


def _llm_agent(tmp_path: Path):
    prompt = tmp_path / "llm.md.j2"
    prompt.write_text("You are {{ agent.name }}.")
    return type("Llm", (Agent,), {"name": "llm", "description": "asks a model", "toolbox": (), "prompt": prompt})


def _model_policy():
    """The model API refuses the key, then fails, then answers."""
    calls = []

    def policy(system: str, context: str, tools: list[str]):
        calls.append(context)
        if len(calls) == 1:
            return invalid_key(SECRETS["OPENAI_API_KEY"])
        if len(calls) == 2:
            return server_error()
        return "done_for_now", {"message": "all good"}

    return policy


async def _redis_dump(rt) -> str:
    """Every value under the deployment's prefix, as text."""
    out = []
    async for key in rt.redis.scan_iter(match=f"{rt.settings.key_prefix}:*", count=500):
        kind = await rt.redis.type(key)
        if kind == "string":
            value = await rt.redis.get(key)
        elif kind == "hash":
            value = await rt.redis.hgetall(key)
        elif kind == "list":
            value = await rt.redis.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await rt.redis.smembers(key))
        elif kind == "zset":
            value = await rt.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await rt.redis.xrange(key)
        else:
            value = kind
        out.append(f"{key} {value!r}")
    return "\n".join(out)


async def _dashboard_pages(s, thread_ids: list[str]) -> list[str]:
    """Log in with the token, then read every page: the list, health, each thread and its contexts."""
    async with httpx.AsyncClient(base_url=s.url, timeout=20) as browser:  # keeps the cookies, as a browser does
        login = await browser.get("/dashboard/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', login.text).group(1)
        r = await browser.post(
            "/dashboard/login", data={"nonce": nonce, "next": "/", "token": SECRETS["FRONTDESK_API_TOKEN"]}
        )
        assert r.status_code == 303, r.text[:300]
        pages = [login.text, r.text]
        for path in ["/", "/?status=failed", "/dashboard/health"] + [f"/dashboard/threads/{t}" for t in thread_ids]:
            page = await browser.get(path)
            assert page.status_code == 200, (path, page.status_code)
            pages.append(page.text)
        for thread_id in thread_ids:
            thread = await s.rt.store.load(thread_id)
            for index in range(len(thread.events)):
                pages.append((await browser.get(f"/dashboard/threads/{thread_id}/context/{index}")).text)
    return pages


async def test_no_secret_shows_anywhere(redis_url, prefix, tmp_path, captured_logs, monkeypatch):
    monkeypatch.setattr(fake_slack, "TOKEN", SECRETS["SLACK_BOT_TOKEN"])  # the fake Slack accepts our token
    model = FakeOpenAI(_model_policy())
    callbacks = Callbacks()
    token = SECRETS["FRONTDESK_API_TOKEN"]
    auth = {"Authorization": f"Bearer {token}"}
    answers: list[str] = []  # every HTTP answer we gave
    with LoopbackServer(model.app) as api, LoopbackServer(callbacks.app) as hooks:
        async with relay(password=SECRETS["FRONTDESK_SMTP_RELAY_PASSWORD"].encode()) as (sink, relay_at):
            overrides = dict(
                slack_bot_token=SECRETS["SLACK_BOT_TOKEN"],
                slack_signing_secret=SECRETS["SLACK_SIGNING_SECRET"],
                webhook_secret=SECRETS["FRONTDESK_WEBHOOK_SECRET"],
                api_token=token,
                model="openai:fake-model",
                openai_base_url=f"{api.url}/v1",
                openai_api_key=SECRETS["OPENAI_API_KEY"],
                model_retries=0,
                smtp_relay=relay_at,
                smtp_relay_user=RELAY_USER,
                smtp_relay_password=SECRETS["FRONTDESK_SMTP_RELAY_PASSWORD"],
                smtp_relay_starttls=False,
                email_token_secret=SECRETS["FRONTDESK_EMAIL_TOKEN_SECRET"],
                log_level="debug",
                claim_timeout=30.0,  # a slow first model call must not lose its lease and be made twice
            )
            agents = [EchoAgent(), lambda rt: _llm_agent(tmp_path)(rt)]
            async with stack(
                redis_url,
                prefix,
                tmp_path,
                agents=agents,
                config="",
                twilio_token=SECRETS["TWILIO_AUTH_TOKEN"],
                **overrides,
            ) as s:
                async with smtp_serving(s.rt) as port, s.workers():
                    threads = await _run_flows(s, port, hooks.url, callbacks, sink, auth, answers)
                    pages = await _dashboard_pages(s, threads)
                    for path in [
                        "/api/v1/threads?limit=500",
                        "/api/v1/dlq",
                        "/api/v1/agents",
                        "/metrics",
                        "/openapi.json",
                        "/readyz",
                    ]:
                        r = await s.http.get(path, headers=auth)
                        assert r.status_code == 200, path
                        answers.append(r.text)
                    for thread_id in threads:
                        answers.append((await s.http.get(f"/api/v1/threads/{thread_id}", headers=auth)).text)
                    stored = await _redis_dump(s.rt)
                    sent = json.dumps([c.args for c in s.slack.calls]) + json.dumps(s.twilio.messages)
                sent += json.dumps([{k: v for k, v in m.items() if k != "headers"} for m in callbacks.received])
                sent += "\n".join(m.as_string() for m in sink.mail)
    logs = captured_logs.getvalue()

    # The run was real: the log and the store hold plenty, the failures included.
    assert len(logs.splitlines()) > 50 and "invalid_auth" in logs and "Twilio error 20003" in logs
    assert "Incorrect API key provided" in stored and "535" in stored and "callback answered 400" in stored
    leaks = {
        name: [
            where
            for where, text in (
                ("logs", logs),
                ("redis", stored),
                ("http answers", "\n".join(answers)),
                ("dashboard", "\n".join(pages)),
                ("sent out", sent),
            )
            if value in text
        ]
        for name, value in needles(s.twilio.account_sid).items()
    }
    assert {name: where for name, where in leaks.items() if where} == {}


async def _run_flows(
    s, port: int, hooks: str, callbacks: Callbacks, sink, auth: dict[str, str], answers: list[str]
) -> list[str]:
    """Every channel, happy and failing; the ids of the threads made."""
    # Slack: a question and its answer; a channel that is gone; our token refused once.
    await s.slack_event(mention("hello", ts="1710000000.000100"))
    await s.slack_event(mention("hello", ts="1710000001.000100", channel="CGONE1"))
    slack_ok = await s.thread_of("slack", f"{fake_slack.TEAM}/C1/1710000000.000100")
    slack_gone = await s.thread_of("slack", f"{fake_slack.TEAM}/CGONE1/1710000001.000100")
    await s.wait_status(slack_ok.id, "waiting_human")
    await s.wait_status(slack_gone.id, "failed")  # its post is done: the scripted refusal below is the answer's
    s.slack.script("chat.postMessage", Reply(body={"ok": False, "error": "invalid_auth"}))
    await s.slack_event(message("blue", ts="1710000002.000100", thread_ts="1710000000.000100"))
    # SMS: a question; Twilio refusing our credentials; Twilio failing, then taking it.
    await s.sms(THEM, "hello")
    sms_ok = await s.thread_of("sms", f"{THEM}/{US}")
    await s.wait_status(sms_ok.id, "waiting_human")
    s.twilio.fail_next(401, 20003, "Authenticate")
    await s.sms(OTHER, "hello")
    sms_refused = await s.thread_of("sms", f"{OTHER}/{US}")
    s.twilio.fail_next(500, 20500, "Internal Server Error")
    await s.sms("+15551230003", "hello")
    sms_retried = await s.thread_of("sms", f"+15551230003/{US}")
    # Webhooks: a callback that fails once, then takes it; one that refuses for good.
    callbacks.script = {"/ok": [500, 200], "/refuses": [400]}
    ok = await s.webhook("echo", {"text": "hello", "callback_url": f"{hooks}/ok"})
    refused = await s.webhook("echo", {"text": "hello", "callback_url": f"{hooks}/refuses"})
    # Email: a question through the relay (AUTH with the password); then the relay refuses the password.
    new = "From: <{a}>\nTo: echo@frontdesk.localhost\nSubject: hi\nMessage-ID: <{mid}>\n\nhello\n"
    await asyncio.to_thread(
        mail_to, port, new.format(a=ALICE, mid="e1@example.com"), mail_from=ALICE, rcpt="echo@frontdesk.localhost"
    )
    await eventually(lambda: sink.to(ALICE))
    mail_ok = await s.thread_of("email", "<e1@example.com>")
    sink.password = b"rotated-at-the-relay"
    await asyncio.to_thread(
        mail_to,
        port,
        reply_mail(sink.to(ALICE)[0], "e2@example.com", "an answer", sender=ALICE),
        mail_from=ALICE,
        rcpt=sink.to(ALICE)[0]["Reply-To"],
    )
    # The model: the key refused, then a server error, then an answer.
    launched = await s.http.post("/api/v1/threads", json={"agent": "llm", "text": "hi"}, headers=auth)
    llm = launched.json()["id"]
    # Bad credentials sent to us, on every path.
    raw = json.dumps({"type": "event_callback", "event": {}})
    for response in (
        await s.http.post("/slack/events", content=raw, headers=signed(raw, secret="guessed-secret")),
        await s.http.post(
            f"{s.url}/twilio/sms",
            data={"MessageSid": "SMx", "From": THEM, "To": US, "Body": "x"},
            headers=signed_twilio(
                f"{s.url}/twilio/sms", {"MessageSid": "SMx", "From": THEM, "To": US, "Body": "x"}, "guessed-token"
            ),
        ),
        await s.webhook("echo", {"text": "x"}, secret="whsec_" + base64.b64encode(b"g" * 32).decode()),
        await s.http.get("/api/v1/threads", headers={"Authorization": f"Bearer {SECRETS['FRONTDESK_API_TOKEN'][:-1]}"}),
        await s.http.post("/dashboard/login", data={"token": "guess", "nonce": "x"}),
    ):
        assert response.status_code in (401, 403), response.text
        answers.append(response.text + json.dumps(dict(response.headers)))
    answers += [launched.text, ok.text, refused.text]
    assert ok.status_code == refused.status_code == 202, (ok.text, refused.text)

    ids = [
        slack_ok.id,
        slack_gone.id,
        sms_ok.id,
        sms_refused.id,
        sms_retried.id,
        ok.json()["thread_id"],
        refused.json()["thread_id"],
        mail_ok.id,
        llm,
    ]
    await s.wait_status(slack_ok.id, "failed")  # the answer was refused with invalid_auth
    await s.wait_status(sms_refused.id, "failed")
    await s.wait_status(sms_retried.id, "waiting_human")
    await s.wait_status(ids[5], "waiting_human")
    await s.wait_status(ids[6], "failed")
    await s.wait_status(mail_ok.id, "failed")
    await s.wait_status(llm, "done")
    return ids


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_logged_traceback_shows_no_local_variables(settings, log_format):
    """A frame's locals can hold a credential (a client's `password` argument): tracebacks leave them out."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(settings.model_copy(update={"log_format": log_format, "log_level": "info"}), stream=buffer)
    try:
        password = SECRETS["FRONTDESK_SMTP_RELAY_PASSWORD"]  # noqa: F841 - a local the traceback could print
        try:
            raise RuntimeError("relay refused the login")
        except RuntimeError:
            logging.getLogger("frontdesk.test").exception("send failed")
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_frontdesk", False)]:
            root.removeHandler(handler)
        root.setLevel(level)
    out = buffer.getvalue()
    assert "relay refused the login" in out and "Traceback" in out
    assert SECRETS["FRONTDESK_SMTP_RELAY_PASSWORD"] not in out
