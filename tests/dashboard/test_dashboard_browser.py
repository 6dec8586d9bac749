"""The dashboard in a real headless Chromium: log in, open a waiting thread, approve it, watch it finish.

Playwright drives Debian's chromium (/usr/bin/chromium; Playwright's own browser
download does not work on this network). Without either, these tests skip and
say why. Screenshots at 1280 px and 390 px land in test-artifacts/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dashkit import TOKEN, dashboard, message, wait_status
from helpers import eventually
from plugins import ApprovalAgent, EchoAgent

from agents import load_agents
from gateway.launch import launch_thread

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="the Python package `playwright` is not installed (pip install -e '.[test]')"
)
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (make browser) to run the browser tests",
)

WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def test_log_in_approve_a_waiting_thread_and_see_it_finish_live(settings, browser):
    async with dashboard(settings, over_http=True, agents=[ApprovalAgent(), EchoAgent(), load_agents]) as dash:
        base = str(dash.client.base_url).rstrip("/")
        rt = dash.rt
        await rt.ingest.accept(message("q1", "hello there", channel="api", sender="ana@example.com"), "echo")
        calc = await launch_thread(rt, "calculator", "What is 6 times 7?", by="ops")
        waiting = (
            await rt.ingest.accept(message("a1", "v2.4.1", channel="api", sender="+15550001"), "approver")
        ).thread_id
        await wait_status(rt, calc.id, "waiting_human")
        await wait_status(rt, waiting, "waiting_approval")

        context = await browser.new_context(viewport=WIDE)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

        # Log in through the form.
        await page.goto(f"{base}/")
        assert "/dashboard/login" in page.url
        await page.fill("#token", "not-the-token")
        await page.click("button[type=submit]")
        assert "That is not the API token." in await page.inner_text("main")
        await page.fill("#token", TOKEN)
        await page.click("button[type=submit]")
        await page.wait_for_selector("table.threads")
        assert page.url == f"{base}/"
        errors.clear()  # the refused login answered 403, as it should
        await shot(page, "dashboard-list-1280")

        # Open the waiting thread from the list.
        await page.click("a[href*='status=waiting_approval']")
        await page.wait_for_selector(f"a.thread-link[href='/dashboard/threads/{waiting}']")
        await page.click(f"a.thread-link[href='/dashboard/threads/{waiting}']")
        await page.wait_for_selector("#act-approve")
        await page.wait_for_selector("#live:not([hidden])")  # the live stream is connected
        assert await page.get_attribute("#status", "data-status") == "waiting_approval"
        await shot(page, "dashboard-thread-waiting-1280")

        # Approve with a comment; the page is not reloaded: what happens arrives on the stream.
        await page.evaluate("window.__sameDocument = true")
        await page.fill("#decision-comment", "ship it")
        await page.click("#act-approve button.approve")
        await page.wait_for_selector('#status[data-status="done"]', timeout=15_000)
        assert await page.evaluate("window.__sameDocument === true")
        timeline = await page.inner_text("#timeline")
        assert "Approved by dashboard" in timeline and "ship it" in timeline and "approved by dashboard" in timeline
        assert "Nothing waits for anyone" in await page.inner_text("#actions")
        await shot(page, "dashboard-thread-1280")

        thread = await rt.store.load(waiting)
        decision = next(e for e in thread.events if e.type == "approval_decision")
        assert (decision.by, decision.comment, thread.status) == ("dashboard", "ship it", "done")

        # A model turn's context window, opened.
        await page.goto(f"{base}/dashboard/threads/{calc.id}")
        await page.click("details.context summary")
        # The page's CSP forbids eval, so poll from here rather than with wait_for_function.
        await eventually(lambda: _starts(page, "details.context pre", "<user_message"))
        await shot(page, "dashboard-context-1280")
        await page.goto(f"{base}/dashboard/health")
        await page.wait_for_selector("text=Workers seen")
        await shot(page, "dashboard-health-1280")

        # The same pages on a phone-width screen: nothing wider than the screen.
        phone = await browser.new_context(
            viewport=PHONE, storage_state=await context.storage_state(), is_mobile=True, has_touch=True
        )
        small = await phone.new_page()
        for name, path in (("list", "/"), ("thread", f"/dashboard/threads/{waiting}"), ("health", "/dashboard/health")):
            await small.goto(f"{base}{path}")
            await small.wait_for_selector("main")
            overflow = await small.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} page is {overflow}px wider than the phone"
            await shot(small, f"dashboard-{name}-390")
        await phone.close()
        await context.close()
        assert errors == []


async def _starts(page, selector: str, text: str) -> bool:
    return (await page.inner_text(selector)).startswith(text)


async def test_retry_a_failed_delivery_from_the_thread_page(settings, browser, sink):
    settings = settings.model_copy(update={"delivery_attempts": 1})
    sink.failing = True
    async with dashboard(settings, sink, over_http=True, agents=[EchoAgent()]) as dash:
        base = str(dash.client.base_url).rstrip("/")
        accepted = await dash.rt.ingest.accept(message("f1", "please call me back", sender="+15550002"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "failed")
        context = await browser.new_context(viewport=WIDE)
        await context.add_cookies(
            [{"name": "frontdesk_session", "value": dash.client.cookies["frontdesk_session"], "url": base}]
        )
        page = await context.new_page()
        await page.goto(f"{base}/?status=failed")
        await page.click(f"a.thread-link[href='/dashboard/threads/{accepted.thread_id}']")
        await page.wait_for_selector("#live:not([hidden])")
        await shot(page, "dashboard-thread-failed-1280")
        sink.failing = False
        await page.click("text=Retry delivery")
        await page.wait_for_selector('#status[data-status="waiting_human"]', timeout=15_000)
        timeline = await page.inner_text("#timeline")
        assert "delivery " in timeline and "queued again" in timeline and "— dashboard" in timeline
        assert await page.locator("text=Retry delivery").count() == 0
        await shot(page, "dashboard-thread-retried-1280")
        await context.close()
