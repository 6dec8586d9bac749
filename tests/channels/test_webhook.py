"""Webhooks in and out over real HTTP: signatures, replays, callbacks, SSRF, outer loops."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from helpers import background, eventually
from plugins import ApprovalAgent, EchoAgent
from pydantic import SecretStr
from servers import LoopbackServer, app_server
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from channels.webhook import channel as webhook_channel
from channels.webhook import signature
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()


def signed(
    body: dict | bytes, msg_id: str, secret: str = SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    return raw, {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(secret, msg_id, ts, raw),
    }


class Receiver:
    """A callback endpoint that checks signatures with the standardwebhooks package."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.messages: dict[str, dict] = {}
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        payload = Webhook(SECRET).verify(body, dict(request.headers))  # raises on a bad signature
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "0"})
        self.messages.setdefault(request.headers["webhook-id"], payload)
        return JSONResponse({"ok": True})


@pytest.fixture
async def gateway(settings):
    settings = settings.model_copy(
        update={"webhook_secret": SecretStr(f"{SECRET},{OLD_SECRET}"), "callback_allow_private": True}
    )
    async with running(
        settings, builtins=False, agents=[EchoAgent(), ApprovalAgent()], channels=[webhook_channel]
    ) as rt:
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                yield client, rt


async def test_signed_webhook_starts_a_thread_and_a_replay_gets_the_same_id(gateway):
    client, rt = gateway
    body, headers = signed({"text": "hello", "data": {"order": 42}}, "msg_1")
    first = await client.post("/webhooks/echo", content=body, headers=headers)
    again = await client.post("/webhooks/echo", content=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["thread_id"] == again.json()["thread_id"] and again.json()["duplicate"] is True
    thread_id = first.json()["thread_id"]
    await eventually(lambda: _status(client, thread_id, "waiting_human"))
    thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    assert sum(e["type"] == "user_message" for e in thread["events"]) == 1
    assert thread["events"][0]["data"] == {"order": 42}


async def test_a_secret_being_rotated_out_is_still_accepted(gateway):
    client, _ = gateway
    body, headers = signed({"text": "hi"}, "msg_old", secret=OLD_SECRET)
    assert (await client.post("/webhooks/echo", content=body, headers=headers)).status_code == 202


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda b, h: (b, {**h, "webhook-signature": "v1,AAAA"}), 401, "no signature matches"),
        (lambda b, h: (b.replace(b"hi", b"ho"), h), 401, "no signature matches"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-id"}), 401, "missing"),
        (lambda b, h: signed(b, "msg_stale", timestamp=int(time.time()) - 3600), 401, "window"),
        (lambda b, h: signed(b'{"text": ', "msg_bad"), 400, "invalid body"),
        (lambda b, h: signed({"data": {}}, "msg_notext"), 400, "text"),
        (lambda b, h: signed({"text": "x", "callback_url": "ftp://x"}, "msg_ftp"), 400, "callback_url"),
    ],
)
async def test_bad_requests_are_refused_and_nothing_is_enqueued(gateway, mutate, status, reason):
    client, rt = gateway
    body, headers = mutate(*signed({"text": "hi"}, "msg_x"))
    before = await rt.redis.xlen(rt.keys.inbound(0))
    r = await client.post("/webhooks/echo", content=body, headers=headers)
    assert r.status_code == status and reason in r.json()["detail"]
    assert await rt.redis.xlen(rt.keys.inbound(0)) == before


async def test_unknown_agent_is_404_and_oversize_is_413(gateway):
    client, rt = gateway
    body, headers = signed({"text": "hi"}, "msg_404")
    assert (await client.post("/webhooks/nobody", content=body, headers=headers)).status_code == 404
    big, headers = signed({"text": "x" * rt.settings.max_body_bytes}, "msg_big")
    assert (await client.post("/webhooks/echo", content=big, headers=headers)).status_code == 413


async def test_no_secret_configured_means_no_entry(settings):
    async with running(settings, builtins=False, agents=[EchoAgent()], channels=[webhook_channel]) as rt:
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url) as client:
            body, headers = signed({"text": "hi"}, "msg_n")
            r = await client.post("/webhooks/echo", content=body, headers=headers)
    assert r.status_code == 401 and "no webhook secret" in r.json()["detail"]


async def test_callbacks_are_signed_retried_and_delivered_once_then_the_caller_answers(gateway):
    client, rt = gateway
    receiver = Receiver(fail_first=2)
    with LoopbackServer(receiver.app) as server:
        callback = f"{server.url}/hook"
        body, headers = signed({"text": "hello", "callback_url": callback, "conversation": "order-7"}, "msg_cb")
        thread_id = (await client.post("/webhooks/echo", content=body, headers=headers)).json()["thread_id"]
        await eventually(lambda: len(receiver.messages) == 1)
        question = next(iter(receiver.messages.values()))
        assert question["type"] == "question" and question["thread_id"] == thread_id and receiver.attempts == 3
        # The caller answers on the same conversation; the thread finishes and says so.
        body, headers = signed({"text": "yes", "callback_url": callback, "conversation": "order-7"}, "msg_cb2")
        assert (await client.post("/webhooks/echo", content=body, headers=headers)).json()["thread_id"] == thread_id
        await eventually(lambda: len(receiver.messages) == 2)
        # The second `sent` is recorded on the thread just after the callback arrives: wait for it
        # while the workers still run (reading it at once failed about half the runs).
        await eventually(lambda: _deliveries(client, thread_id, ["sent", "sent"]))
    final = list(receiver.messages.values())[-1]
    assert final["type"] == "final" and final["text"] == "ok: yes"


async def test_a_callback_that_keeps_failing_is_dead_lettered_and_the_thread_fails(gateway):
    client, rt = gateway
    receiver = Receiver(fail_first=10**6)
    with LoopbackServer(receiver.app) as server:
        body, headers = signed({"text": "hello", "callback_url": f"{server.url}/hook"}, "msg_dead")
        thread_id = (await client.post("/webhooks/echo", content=body, headers=headers)).json()["thread_id"]
        await eventually(lambda: _status(client, thread_id, "failed"), timeout=30)
    assert receiver.attempts == rt.settings.delivery_attempts
    dead = await rt.streams.dlq_entries()
    assert any("503" in fields["reason"] for _, _, fields in dead)


async def test_private_callbacks_are_refused_unless_allowed(settings):
    settings = settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    async with running(settings, builtins=False, agents=[EchoAgent()], channels=[webhook_channel]) as rt:
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url) as client:
            for target in (
                "http://127.0.0.1:9/x",
                "http://10.1.2.3/x",
                "http://localhost/x",
                "http://[::1]/x",
                "http://169.254.169.254/latest",
            ):
                body, headers = signed({"text": "hi", "callback_url": target}, f"msg_{hash(target)}")
                r = await client.post("/webhooks/echo", content=body, headers=headers)
                assert r.status_code == 400 and "private" in r.json()["detail"], target


async def test_outer_loop_launch_with_a_webhook_contact_is_resumed_by_its_reply(gateway):
    """A thread launched by the API asks its contact (a callback) and the callback's answer resumes it."""
    client, rt = gateway
    receiver = Receiver()
    with LoopbackServer(receiver.app) as server:
        callback = f"{server.url}/hook"
        r = await client.post(
            "/api/v1/threads",
            json={"agent": "approver", "text": "v1.2", "contact": {"channel": "webhook", "address": callback}},
        )
        thread_id = r.json()["id"]
        await eventually(lambda: len(receiver.messages) == 1)
        approval = next(iter(receiver.messages.values()))
        assert approval["type"] == "approval" and approval["actions"][0]["call_id"] == "call-1"
        decision = {"call_id": "call-1", "approved": True, "comment": "go"}
        body, headers = signed(
            {"text": "approve", "callback_url": callback, "conversation": thread_id, "decision": decision}, "msg_dec"
        )
        assert (await client.post("/webhooks/approver", content=body, headers=headers)).json()["thread_id"] == thread_id
        await eventually(lambda: _status(client, thread_id, "done"))
    thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    done = next(e for e in thread["events"] if e["type"] == "done_for_now")
    assert done["text"] == f"approved by webhook:{callback}"
    decision = next(e for e in thread["events"] if e["type"] == "approval_decision")
    assert decision["by"] == f"webhook:{callback}" and decision["comment"] == "go"
    # The approver was told who decided (a receipt), and got the final message.
    assert [m["type"] for m in receiver.messages.values()] == ["approval", "receipt", "final"]


async def _deliveries(client, thread_id, expected):
    thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    return [e["status"] for e in thread["events"] if e["type"] == "delivery"] == expected


async def _status(client, thread_id, status):
    return (await client.get(f"/api/v1/threads/{thread_id}")).json().get("status") == status
