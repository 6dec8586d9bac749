"""Any workspace: the OAuth install (state checked), installations per team in Redis, each event and
send with its workspace's token, uninstall and revocation cleaning up, token rotation."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_slack import CLIENT_ID, CLIENT_SECRET, TEAM, TOKEN
from helpers import eventually
from plugins import EchoAgent
from slack_app import App, slack_app

from channels.slack.oauth import AUTHORIZE_URL, COOKIE, RENEW_BEFORE

T2 = "T0OTHER"


@pytest.fixture(autouse=True)
def oauth_app(monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("FRONTDESK_SLACK_CLIENT_SECRET", CLIENT_SECRET)


def callback(event: dict, event_id: str, team: str) -> dict:
    return {"type": "event_callback", "team_id": team, "api_app_id": "A0APP", "event": event, "event_id": event_id}


def mention(team: str, bot: str, ts: str, text: str = "hello") -> dict:
    return {"type": "app_mention", "user": "U1", "text": f"<@{bot}> {text}", "ts": ts, "channel": "C1", "team": team}


async def install(app: App, code: str = "code-1", **grant) -> dict:
    app.fake.grant(code, team=T2, **grant)
    r = await app.http.get("/slack/install", follow_redirects=False)
    state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
    r = await app.http.get("/slack/oauth_redirect", params={"code": code, "state": state})
    assert r.status_code == 200, r.text
    return json.loads(await app.rt.redis.get(f"{app.rt.settings.key_prefix}:slack:install:-:{T2}"))


async def post(app: App, body: dict):
    r = await app.signed_post("/slack/events", json.dumps(body))
    assert r.status_code == 200, r.text


async def test_install_redirects_with_a_state_and_the_redirect_checks_it_once(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent(), slack_bot_token=None) as app:
        app.fake.grant("code-1", team=T2)
        r = await app.http.get("/slack/install", follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"].startswith(AUTHORIZE_URL + "?")
        query = parse_qs(urlsplit(r.headers["location"]).query)
        state = query["state"][0]
        assert query["client_id"] == [CLIENT_ID] and "commands" in query["scope"][0].split(",")
        assert query["redirect_uri"] == ["http://frontdesk.test/slack/oauth_redirect"]
        assert app.http.cookies[COOKIE] == state

        # Another browser (no cookie, or another state) cannot complete this install.
        app.http.cookies.set(COOKIE, "someone-else")
        r = await app.http.get("/slack/oauth_redirect", params={"code": "code-1", "state": state})
        assert r.status_code == 400 and app.fake.to("oauth.v2.access", ok=None) == []
        app.http.cookies.set(COOKIE, state)

        r = await app.http.get("/slack/oauth_redirect", params={"code": "code-1", "state": state})
        assert r.status_code == 200 and f"Team {T2}" in r.text
        [exchange] = app.fake.to("oauth.v2.access")
        assert exchange["code"] == "code-1" and exchange["redirect_uri"].endswith("/slack/oauth_redirect")

        # The state was good once.
        app.http.cookies.set(COOKIE, state)
        r = await app.http.get("/slack/oauth_redirect", params={"code": "code-1", "state": state})
        assert r.status_code == 400 and len(app.fake.to("oauth.v2.access", ok=None)) == 1


async def test_a_refused_or_failed_install_stores_nothing(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent(), slack_bot_token=None) as app:
        r = await app.http.get("/slack/install", follow_redirects=False)
        state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
        r = await app.http.get("/slack/oauth_redirect", params={"error": "access_denied", "state": state})
        assert r.status_code == 200 and "access_denied" in r.text
        r = await app.http.get("/slack/install", follow_redirects=False)
        state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
        r = await app.http.get("/slack/oauth_redirect", params={"code": "not-granted", "state": state})
        assert r.status_code == 502 and app.fake.to("oauth.v2.access", ok=False)
        assert await app.rt.redis.keys(f"{app.rt.settings.key_prefix}:slack:install:*") == []


async def test_each_workspace_is_answered_with_its_own_token_and_the_single_token_still_works(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent()) as app:  # SLACK_BOT_TOKEN and OAuth installs together
        record = await install(app)
        await post(app, callback(mention(T2, record["bot_user_id"], "1710000000.000100"), "Ev1", T2))
        [question] = await eventually(lambda: [c for c in app.fake.calls if c.method == "chat.postMessage" and c.ok])
        assert (
            question.authorization == f"Bearer {record['bot_token']}" and question.args["text"] == "you said 'hello'?"
        )
        thread = await app.thread(f"{T2}/C1/1710000000.000100")
        assert thread.origin.reply_to["team"] == T2

        # The workspace of SLACK_BOT_TOKEN, which has no installation: its own token, as before.
        await post(app, callback(mention(TEAM, "U0BOT", "1710000001.000100", "hi"), "Ev2", TEAM))
        await eventually(lambda: app.fake.posts(text="you said 'hi'?"))
        mine = next(c for c in app.fake.calls if c.method == "chat.postMessage" and c.args["text"] == "you said 'hi'?")
        assert mine.authorization == f"Bearer {TOKEN}"


async def test_uninstall_and_revocation_remove_the_installation(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent(), slack_bot_token=None) as app:
        record = await install(app)
        key = f"{app.rt.settings.key_prefix}:slack:install:-:{T2}"
        await post(app, callback({"type": "tokens_revoked", "tokens": {"oauth": ["U1"]}}, "Ev1", T2))
        assert await app.rt.redis.exists(key)  # a person's token only: the bot stays
        await post(app, callback({"type": "tokens_revoked", "tokens": {"bot": [record["bot_user_id"]]}}, "Ev2", T2))
        assert not await app.rt.redis.exists(key)

        await install(app, code="code-2")
        await post(app, callback({"type": "app_uninstalled"}, "Ev3", T2))
        assert not await app.rt.redis.exists(key)

        # An event from the workspace now: nothing to answer it with, so 200 and nothing enqueued.
        await post(app, callback(mention(T2, record["bot_user_id"], "1710000002.000100"), "Ev4", T2))
        assert await app.rt.redis.xlen(app.rt.keys.inbound(0)) == 0


async def test_a_rotating_token_is_renewed_before_it_expires(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent(), slack_bot_token=None) as app:
        app.fake.expires_in = RENEW_BEFORE - 60  # already inside the renewal window
        record = await install(app, rotating=True)
        assert record["refresh_token"] and record["expires_at"] < time.time() + RENEW_BEFORE
        app.fake.expires_in = 43200
        await post(app, callback(mention(T2, record["bot_user_id"], "1710000000.000100"), "Ev1", T2))
        [question] = await eventually(lambda: [c for c in app.fake.calls if c.method == "chat.postMessage" and c.ok])
        renewed = json.loads(await app.rt.redis.get(f"{app.rt.settings.key_prefix}:slack:install:-:{T2}"))
        assert question.authorization == f"Bearer {renewed['bot_token']}" != f"Bearer {record['bot_token']}"
        [refresh] = app.fake.to("oauth.v2.access", ok=True)[1:]
        assert refresh["grant_type"] == "refresh_token" and refresh["refresh_token"] == record["refresh_token"]
        assert renewed["refresh_token"] != record["refresh_token"] and renewed["expires_at"] > time.time() + 40000


async def test_an_agent_reaches_someone_in_an_installed_workspace_by_naming_it(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent(), slack_bot_token=None) as app:
        record = await install(app)
        contact = {"channel": "slack", "address": f"{T2}/U7"}
        r = await app.http.post("/api/v1/threads", json={"agent": "echo", "text": "build green?", "contact": contact})
        assert r.status_code == 201, r.text
        [question] = await eventually(lambda: [c for c in app.fake.calls if c.method == "chat.postMessage" and c.ok])
        assert question.args["channel"] == "D7" and question.authorization == f"Bearer {record['bot_token']}"
        [opened] = [c for c in app.fake.calls if c.method == "conversations.open"]
        assert opened.authorization == question.authorization
        await eventually(lambda: app.rt.ingest.thread_for("slack", f"{T2}/D7/{question.reply['ts']}"))
