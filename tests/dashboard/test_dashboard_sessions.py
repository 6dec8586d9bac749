"""Dashboard sessions live in Redis: logging out ends one, an operator ends all, a copied cookie dies with them."""

from __future__ import annotations

import re

import httpx
import pytest
from dashkit import TOKEN, login
from plugins import EchoAgent
from pydantic import SecretStr

from gateway.runtime import running
from gateway.web.app import create_app
from gateway.web.dashboard.sessions import DashboardSessions, ref_of


@pytest.fixture
async def app_with_token(settings):
    settings = settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
        yield create_app(settings, rt), rt


def _client(app, agent: str = "browser-a") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers={"user-agent": agent}
    )


async def _logged_in(client: httpx.AsyncClient) -> str:
    """Log `client` in; the CSRF token of its session."""
    assert (await login(client)).status_code == 303
    page = await client.get("/dashboard/health")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def _copy_of(client: httpx.AsyncClient, app) -> httpx.AsyncClient:
    thief = _client(app, "somewhere-else")
    thief.cookies.set("frontdesk_session", client.cookies["frontdesk_session"], domain="127.0.0.1")
    return thief


async def test_logging_out_ends_the_session_and_every_copy_of_its_cookie(app_with_token):
    app, rt = app_with_token
    async with _client(app, "browser-a") as client:
        csrf = await _logged_in(client)
        async with _copy_of(client, app) as thief:
            assert (await thief.get("/")).status_code == 200  # a copied cookie works while the session lives
            out = await client.post("/dashboard/logout", data={"csrf": csrf})
            assert out.status_code == 303
            for path in ("/", "/dashboard/health"):
                r = await thief.get(path)
                assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
            assert (await thief.post("/dashboard/logout", data={"csrf": csrf})).status_code == 403
            assert await DashboardSessions(rt.redis, rt.keys).active() == []


async def test_the_health_page_lists_sessions_and_ending_all_needs_csrf_and_logs_everyone_out(app_with_token):
    app, rt = app_with_token
    async with _client(app, "browser-a") as first, _client(app, "browser-b") as second:
        csrf = await _logged_in(first)
        await _logged_in(second)
        page = await first.get("/dashboard/health")
        listed = re.findall(r"<tr><td><code>([0-9a-f]{10})</code>", page.text)
        assert len(listed) == 2 and "browser-a" in page.text and "browser-b" in page.text
        own = first.cookies["frontdesk_session"].split(".")[0]
        assert ref_of(own) in listed and "(this one)" in page.text
        assert own not in page.text  # a digest of each session, never the id a cookie carries
        # Without the CSRF token nothing ends.
        assert (await first.post("/dashboard/sessions/end", data={})).status_code == 403
        assert (await second.get("/")).status_code == 200
        ended = await first.post("/dashboard/sessions/end", data={"csrf": csrf})
        assert ended.status_code == 303 and ended.headers["location"] == "/dashboard/login"
        for client in (first, second):
            assert (await client.get("/")).status_code == 303
        assert await DashboardSessions(rt.redis, rt.keys).active() == []


async def test_the_api_lists_and_ends_sessions_with_the_bearer_token(app_with_token):
    app, rt = app_with_token
    async with _client(app, "browser-a") as browser, _client(app) as api:
        await _logged_in(browser)
        assert (await api.get("/api/v1/dashboard/sessions")).status_code == 401
        assert (await api.delete("/api/v1/dashboard/sessions")).status_code == 401
        assert (await browser.get("/")).status_code == 200  # refused calls ended nothing
        bearer = {"authorization": f"Bearer {TOKEN}"}
        [listed] = (await api.get("/api/v1/dashboard/sessions", headers=bearer)).json()["sessions"]
        assert listed["ref"] == ref_of(browser.cookies["frontdesk_session"].split(".")[0])
        assert listed["agent"] == "browser-a" and listed["expires"] > listed["issued"]
        assert (await api.delete("/api/v1/dashboard/sessions", headers=bearer)).json() == {"ended": 1}
        assert (await browser.get("/")).status_code == 303
        assert (await api.delete("/api/v1/dashboard/sessions", headers=bearer)).json() == {"ended": 0}


async def test_an_expired_record_is_no_session_and_is_dropped(app_with_token):
    _, rt = app_with_token
    store = DashboardSessions(rt.redis, rt.keys)
    await store.add("old-session", seconds=0)
    await store.add("new-session", seconds=3600, client="10.0.0.1", agent="x" * 500)
    assert not await store.live("old-session") and await store.live("new-session")
    [only] = await store.active()
    assert only.ref == ref_of("new-session") and len(only.agent) == 200 and only.client == "10.0.0.1"
    assert await rt.redis.hkeys(store.name) == ["new-session"]
    assert await store.end("new-session") and not await store.end("new-session")
