"""Who may use the dashboard: login, session cookie, CSRF on every action, open only on loopback."""

from __future__ import annotations

import re

import httpx
import pytest
from dashkit import TOKEN, dashboard, login, message, wait_status
from plugins import ApprovalAgent, EchoAgent
from pydantic import SecretStr

from gateway.runtime import running
from gateway.web.app import create_app


@pytest.fixture
async def app_with_token(settings):
    settings = settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
        yield create_app(settings, rt), rt


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_pages_need_a_login(app_with_token):
    app, _ = app_with_token
    async with client_for(app) as client:
        for path in ("/", "/dashboard/health", "/dashboard/threads/th_x?flash=answered"):
            r = await client.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/dashboard/login?next=")
        assert (await client.get("/dashboard/threads/th_x/stream")).status_code == 403
        login_page = await client.get("/dashboard/login")
        assert login_page.status_code == 200 and 'type="password"' in login_page.text


async def test_a_wrong_token_is_refused_and_the_right_one_sets_a_strict_httponly_cookie(app_with_token):
    app, _ = app_with_token
    async with client_for(app) as client:
        wrong = await login(client, TOKEN[:-1] + "x")
        assert wrong.status_code == 403 and "not the API token" in wrong.text
        assert "frontdesk_session" not in client.cookies
        right = await login(client)
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = next(h for h in right.headers.get_list("set-cookie") if h.startswith("frontdesk_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        page = await client.get("/")
        assert page.status_code == 200 and "Threads" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
        out = await client.post("/dashboard/logout", data={"csrf": csrf})
        assert out.status_code == 303 and "frontdesk_session" not in client.cookies
        assert (await client.get("/")).status_code == 303


async def test_login_needs_its_form_nonce_and_a_tampered_cookie_is_no_session(app_with_token):
    app, _ = app_with_token
    async with client_for(app) as client:
        r = await client.post("/dashboard/login", data={"token": TOKEN, "nonce": "made-up"})
        assert r.status_code == 403
        assert (await login(client)).status_code == 303
        value = client.cookies["frontdesk_session"]
        sid, issued, mac = value.split(".")
        client.cookies.set("frontdesk_session", f"{sid}.{int(issued) + 1}.{mac}", domain="127.0.0.1")
        assert (await client.get("/")).status_code == 303


async def test_a_session_of_another_token_is_not_valid(settings):
    async with dashboard(settings, workers=False) as dash:
        cookie = dash.client.cookies["frontdesk_session"]
    async with dashboard(
        settings.model_copy(update={"key_prefix": settings.key_prefix + "b"}), token="another-token", workers=False
    ) as other:
        other.client.cookies.clear()
        other.client.cookies.set("frontdesk_session", cookie, domain="127.0.0.1")
        assert (await other.client.get("/")).status_code == 303


async def test_every_action_needs_the_csrf_token(settings):
    async with dashboard(settings, agents=[ApprovalAgent()]) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "v1", channel="api"), "approver")
        await wait_status(dash.rt, accepted.thread_id, "waiting_approval")
        url = f"/dashboard/threads/{accepted.thread_id}"
        await dash.page(url)
        actions = [
            (f"{url}/decide", {"call_id": "call-1", "decision": "approve"}),
            (f"{url}/answer", {"text": "hi"}),
            (f"{url}/deliveries/{accepted.thread_id}-1/retry", {}),
            (f"{url}/replay", {"source_id": "1-0"}),
            (f"{url}/save-test", {"turn": "0"}),
            ("/dashboard/dlq/0:1-0/replay", {}),
            ("/dashboard/logout", {}),
        ]
        for path, data in actions:
            missing = await dash.client.post(path, data=data)
            wrong = await dash.client.post(path, data={**data, "csrf": dash.csrf[:-2] + "00"})
            header_wrong = await dash.client.post(path, data=data, headers={"X-CSRF-Token": "nope"})
            assert (missing.status_code, wrong.status_code, header_wrong.status_code) == (403, 403, 403), path
        thread = await dash.rt.store.load(accepted.thread_id)
        assert thread.status == "waiting_approval"  # nothing was decided
        # The same form with the token goes through (by header, as the page's script sends it).
        ok = await dash.client.post(
            f"{url}/decide",
            data={"call_id": "call-1", "decision": "approve"},
            headers={"X-CSRF-Token": dash.csrf, "X-Requested-With": "fetch"},
        )
        assert ok.status_code == 202 and ok.json()["ok"] is True
        done = await wait_status(dash.rt, accepted.thread_id, "done")
        assert next(e for e in done.events if e.type == "approval_decision").by == "dashboard"


async def test_open_without_a_token_on_loopback_still_checks_csrf(settings):
    async with dashboard(settings, token=None, workers=False) as dash:
        assert dash.rt.settings.http_host == "127.0.0.1"
        page = await dash.client.get("/")
        assert page.status_code == 200 and "Log out" not in page.text
        assert (await dash.client.get("/dashboard/login")).status_code == 303  # nobody logs in
        assert (await dash.client.post("/dashboard/threads/th_x/answer", data={"text": "hi"})).status_code == 403
        r = await dash.post("/dashboard/threads/th_x/answer", {"text": "hi"})
        assert r.status_code == 404  # past the CSRF check: there is no such thread


async def test_a_first_visit_in_open_mode_gets_a_session_cookie(settings):
    async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
        async with client_for(create_app(settings, rt)) as client:
            r = await client.get("/")
            assert r.status_code == 200
            cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("frontdesk_session="))
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            csrf = re.search(r'data-csrf="([^"]+)"', r.text).group(1)
            again = await client.get("/")
            assert "frontdesk_session=" not in again.headers.get("set-cookie", "")
            assert re.search(r'data-csrf="([^"]+)"', again.text).group(1) == csrf


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
async def test_no_token_and_not_loopback_is_403_naming_the_setting(settings, host):
    settings = settings.model_copy(update={"http_host": host, "api_token": None})
    async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
        async with client_for(create_app(settings, rt)) as client:
            for r in (
                await client.get("/"),
                await client.get("/dashboard/health"),
                await client.get("/dashboard/login"),
                await client.post("/dashboard/threads/th_x/answer", data={"text": "hi"}),
            ):
                assert r.status_code == 403
                assert "FRONTDESK_API_TOKEN" in r.text
            assert (await client.get("/healthz")).status_code == 200  # the rest of the app is unaffected
