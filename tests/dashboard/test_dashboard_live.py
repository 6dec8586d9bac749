"""Live thread pages over a real socket: updates as events land, resume by Last-Event-ID,
heartbeats, and streams that end when the browser goes or the server stops."""

from __future__ import annotations

import asyncio
import json

import httpx
from dashkit import dashboard, message, sse_events, wait_status
from servers import app_server

from gateway.web.dashboard import close_streams, live


async def next_update(events) -> dict:
    async for event in events:
        if event.get("event") == "update":
            return {"id": int(event["id"]), **json.loads(event["data"])}
    raise AssertionError("the stream ended without an update")


async def test_a_decision_and_the_turn_it_causes_arrive_live(settings):
    async with dashboard(settings, over_http=True) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "v7", channel="api"), "approver")
        await wait_status(dash.rt, accepted.thread_id, "waiting_approval")
        url = f"/dashboard/threads/{accepted.thread_id}"
        page = await dash.page(url)
        assert 'data-count="2"' in page.text
        async with dash.client.stream("GET", f"{url}/stream", params={"after": 2}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            r = await dash.post(
                f"{url}/decide",
                {"call_id": "call-1", "decision": "approve", "comment": "go"},
                headers={"X-Requested-With": "fetch"},
            )
            assert r.status_code == 202
            seen: list[dict] = []
            while not seen or seen[-1]["status"] != "done":
                seen.append(await asyncio.wait_for(next_update(events), timeout=15))
        last = seen[-1]
        assert last["id"] == last["count"] == 4
        html = "".join(u["items"] for u in seen)
        assert 'id="ev-2"' in html and 'id="ev-3"' in html and 'id="ev-1"' not in html
        assert '<strong class="by">dashboard</strong>: “go”' in html and "approved by dashboard" in html
        assert "Done" in last["actions"] and "Approve" not in last["actions"]
        assert 'data-status="done"' in last["header"]


async def test_a_reconnect_resumes_from_last_event_id_and_heartbeats_keep_it_open(settings, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT", 0.2)
    async with dashboard(settings, over_http=True) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        url = f"/dashboard/threads/{accepted.thread_id}/stream"
        async with dash.client.stream("GET", url, params={"after": 0}, headers={"Last-Event-ID": "1"}) as response:
            events = sse_events(response)
            assert (await events.__anext__()) == {"retry": "1000"}
            update = await next_update(events)
            assert update["id"] == 2 and 'id="ev-1"' in update["items"] and 'id="ev-0"' not in update["items"]
            assert (await events.__anext__()) == {"comment": "keep-alive"}
        missing = await dash.client.get("/dashboard/threads/th_nope/stream")
        assert "event: gone" in missing.text


async def test_streams_need_a_session(settings):
    async with dashboard(settings, over_http=True, workers=False) as dash:
        dash.client.cookies.clear()
        r = await dash.client.get("/dashboard/threads/th_x/stream")
        assert r.status_code == 403


async def test_a_stream_ends_after_its_lifetime(settings, monkeypatch):
    async with dashboard(settings, over_http=True) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        monkeypatch.setattr(live, "LIFETIME", 0.3)
        url = f"/dashboard/threads/{accepted.thread_id}/stream?after=2"
        ended = await asyncio.wait_for(dash.client.get(url), timeout=10)  # the whole response: it ends
        assert ended.status_code == 200 and ended.text == "retry: 1000\n\n"


async def test_close_streams_ends_open_streams_so_the_server_can_stop(settings):
    async with dashboard(settings, token=None) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        async with app_server(dash.app) as base:
            async with httpx.AsyncClient(base_url=base, cookies=dict(dash.client.cookies), timeout=10) as client:
                async with client.stream("GET", f"/dashboard/threads/{accepted.thread_id}/stream?after=2") as response:
                    events = sse_events(response)
                    assert (await events.__anext__()) == {"retry": "1000"}
                    close_streams(dash.app)  # what the server's stop calls
                    assert [e async for e in events] == []  # the response ended
                # leaving `app_server` stops the server: it has no open stream to wait on


async def test_a_browser_that_leaves_ends_its_stream(settings):
    async with dashboard(settings, token=None) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        async with app_server(dash.app) as base:
            async with httpx.AsyncClient(base_url=base, cookies=dict(dash.client.cookies), timeout=10) as client:
                async with client.stream("GET", f"/dashboard/threads/{accepted.thread_id}/stream?after=2") as response:
                    assert (await sse_events(response).__anext__()) == {"retry": "1000"}
            # The client hung up without close_streams: stopping the server (leaving `app_server`)
            # would wait on the connection if the stream had not ended with it.
