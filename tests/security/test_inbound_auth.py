"""Every inbound path is authenticated: a walk over the app's routes, and the replay windows.

The walk enumerates the routes of the real app (every channel mounted) and
sends each one an unauthenticated request shaped like a good one, so a refusal
is about authentication and nothing else. A new route fails this test until it
authenticates, or until someone adds it to PUBLIC below with a reason.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import urlencode

import fastapi.routing
import pytest
from fake_slack import event_body, mention, signed
from seckit import API_TOKEN, OUR_NUMBER, stack

from channels.webhook import signature

# Routes anyone may call, and why. Nothing here changes state.
PUBLIC = {
    ("GET", "/healthz"),  # liveness for the orchestrator
    ("GET", "/readyz"),  # readiness; says only whether Redis answers
    ("GET", "/metrics"),  # Prometheus counters (no message content); restrict at the network if needed
    ("GET", "/openapi.json"),  # the API's shape, not its data
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/dashboard/login"),  # the login form itself
    ("GET", "/dashboard/static/{name}"),  # the dashboard's one script and stylesheet
}

PATH_VALUES = {
    "agent": "echo",
    "outbound_id": "th_x-1",
    "ref": "0:0-0",
    "index": "0",
    "name": "app.js",
    "token": "eyJ0IjoidGhfeCJ9.0123456789abcdef0123456789abcdef",  # an approval link not signed by us
}


def app_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route, included routers flattened (FastAPI >= 0.116 nests them)."""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    found = []
    for route in walk(app.routes) if walk else app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                found.append((method, route.path))
    return found


def _good_body(path: str) -> tuple[bytes, str]:
    """A body the route would accept if the caller were authenticated."""
    if path == "/slack/events":
        return json.dumps(event_body(mention("hi", ts="1710000000.000100"), "EvWalk")).encode(), "application/json"
    if path.startswith("/twilio/"):
        form = {
            "MessageSid": "SMwalk",
            "From": "+15551230001",
            "To": OUR_NUMBER,
            "Body": "hi",
            "MessageStatus": "delivered",
        }
        return urlencode(form).encode(), "application/x-www-form-urlencoded"
    if path == "/api/v1/threads":
        return json.dumps({"agent": "echo", "text": "hi"}).encode(), "application/json"
    if path.endswith("/events"):
        return json.dumps({"type": "human_response", "text": "hi"}).encode(), "application/json"
    if path.startswith("/dashboard/"):
        return urlencode(
            {"text": "hi", "approved": "true", "token": "not-the-token", "csrf": "x", "nonce": "x"}
        ).encode(), "application/x-www-form-urlencoded"
    return json.dumps({"text": "hi"}).encode(), "application/json"


async def _stream_lengths(rt) -> tuple[int, ...]:
    keys = rt.keys
    return tuple(
        [await rt.redis.xlen(keys.inbound(p)) for p in range(keys.partitions)]
        + [await rt.redis.xlen(keys.outbox(p)) for p in range(keys.partitions)]
    )


async def test_every_route_refuses_an_unauthenticated_request(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path) as s:
        r = await s.http.post(
            "/api/v1/threads", json={"agent": "echo", "text": "hi"}, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        values = {**PATH_VALUES, "thread_id": r.json()["id"]}
        routes = app_routes(s.app)
        assert (
            ("POST", "/slack/events") in routes
            and ("POST", "/twilio/sms") in routes
            and ("POST", "/webhooks/{agent}") in routes
        )
        assert PUBLIC <= set(routes), f"stale entries in PUBLIC: {PUBLIC - set(routes)}"
        before = await _stream_lengths(s.rt)
        checked = []
        for method, path in routes:
            if (method, path) in PUBLIC:
                continue
            url = path.format(**values)
            if method == "GET":
                response = await s.http.get(url, follow_redirects=False)
                to_login = response.status_code == 303 and response.headers["location"].startswith("/dashboard/login")
                assert response.status_code in (401, 403) or to_login, (
                    method,
                    path,
                    response.status_code,
                    response.text[:200],
                )
            else:
                body, kind = _good_body(path)
                response = await s.http.request(method, url, content=body, headers={"Content-Type": kind})
                assert response.status_code in (401, 403), (method, path, response.status_code, response.text[:200])
            checked.append((method, path))
        assert await _stream_lengths(s.rt) == before  # nothing was enqueued or sent
        assert sum(m == "POST" for m, _ in checked) >= 12


async def test_a_wrong_token_is_refused_like_none(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path) as s:
        for headers in (
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {API_TOKEN[:-1]}"},
            {"Authorization": API_TOKEN + "x"},
        ):
            r = await s.http.get("/api/v1/threads", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (
            await s.http.get("/api/v1/threads", headers={"Authorization": f"Bearer {API_TOKEN}"})
        ).status_code == 200


async def test_signed_requests_outside_the_replay_window_are_refused(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path) as s:
        before = await _stream_lengths(s.rt)
        # Slack: v0 signature over a timestamp more than five minutes old (bolt's check).
        raw = json.dumps(event_body(mention("hi", ts="1710000000.000100"), "EvOld"))
        old = int(time.time()) - 6 * 60
        r = await s.http.post("/slack/events", content=raw, headers=signed(raw, secret=s.signing_secret, timestamp=old))
        assert r.status_code == 401
        # Standard Webhooks: the timestamp must sit within FRONTDESK_WEBHOOK_TOLERANCE (300 s).
        body = json.dumps({"text": "hi"}).encode()
        for stamp in (int(time.time()) - 305, int(time.time()) + 305):
            headers = {
                "webhook-id": f"msg_{stamp}",
                "webhook-timestamp": str(stamp),
                "webhook-signature": signature(s.webhook_secret, f"msg_{stamp}", stamp, body),
            }
            r = await s.http.post("/webhooks/echo", content=body, headers=headers)
            assert r.status_code == 401 and "window" in r.json()["detail"]
        assert await _stream_lengths(s.rt) == before


async def test_a_twilio_replay_is_a_duplicate_not_a_second_message(redis_url, prefix, tmp_path):
    """Twilio signs no timestamp: a replayed request is caught by its MessageSid (FRONTDESK_DEDUPE_TTL)."""
    async with stack(redis_url, prefix, tmp_path) as s:
        first = await s.sms("+15551230001", "hello", sid="SMreplay")
        before = await _stream_lengths(s.rt)
        again = await s.sms("+15551230001", "hello", sid="SMreplay")
        assert first.status_code == again.status_code == 200 and first.text == again.text
        assert await _stream_lengths(s.rt) == before


@pytest.mark.parametrize("agent", ["echo", "approver"])
async def test_webhooks_need_the_agents_own_secret(redis_url, prefix, tmp_path, agent):
    """With FRONTDESK_WEBHOOK_SECRET_<AGENT>, another agent's secret does not open that agent's route."""
    own = "whsec_" + base64.b64encode(b"approver-only-secret-approver-on").decode()
    async with stack(redis_url, prefix, tmp_path, webhook_secrets={"approver": own}) as s:
        other = own if agent == "echo" else s.webhook_secret
        r = await s.webhook(agent, {"text": "hi"}, secret=other)
        assert r.status_code == 401
        r = await s.webhook(agent, {"text": "hi"}, secret=own if agent == "approver" else s.webhook_secret)
        assert r.status_code == 202
