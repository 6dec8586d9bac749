"""The HTTP API over real HTTP: launch, read, resume, list agents; auth and conflicts."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from helpers import background, eventually
from pydantic import SecretStr
from servers import app_server

from agents import load_agents
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker


@pytest.fixture
async def api(settings):
    """(client, runtime) for an app with the sample agents, a worker and a sender running."""
    async with running(settings, builtins=False, agents=[load_agents]) as rt:
        app = create_app(settings, rt)
        async with app_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                yield client, rt


async def wait_status(client: httpx.AsyncClient, thread_id: str, status: str) -> dict:
    async def check():
        body = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        return body if body["status"] == status else None

    return await eventually(check)


async def test_quick_start_question_answer_approval_done(api):
    """The README's quick start, with the demo model: asks, gets an answer, asks approval, finishes."""
    client, _ = api
    r = await client.post("/api/v1/threads", json={"agent": "calculator", "text": "What is 6 times 7?"})
    assert r.status_code == 201
    thread_id = r.json()["id"]
    thread = await wait_status(client, thread_id, "waiting_human")
    assert thread["events"][-1]["text"] == "[demo model] I got 42. What should I divide 42 by?"
    r = await client.post(f"/api/v1/threads/{thread_id}/events", json={"type": "human_response", "text": "2"})
    assert r.status_code == 202
    thread = await wait_status(client, thread_id, "waiting_approval")
    call = thread["events"][-1]
    assert call["tool"] == "divide" and call["arguments"] == {"a": 42.0, "b": 2.0}
    r = await client.post(
        f"/api/v1/threads/{thread_id}/events",
        json={"type": "approval_decision", "call_id": call["call_id"], "approved": True, "comment": "fine"},
    )
    assert r.status_code == 202
    thread = await wait_status(client, thread_id, "done")
    assert thread["events"][-1]["text"] == "[demo model] The answer is 21."
    decision = next(e for e in thread["events"] if e["type"] == "approval_decision")
    assert decision["by"] == "api" and decision["comment"] == "fine"


async def test_resume_that_does_not_match_gets_409(api):
    client, _ = api
    thread_id = (await client.post("/api/v1/threads", json={"agent": "calculator", "text": "6 times 7"})).json()["id"]
    await wait_status(client, thread_id, "waiting_human")
    r = await client.post(
        f"/api/v1/threads/{thread_id}/events", json={"type": "approval_decision", "call_id": "x", "approved": True}
    )
    assert r.status_code == 409 and "human_response" in r.json()["detail"]
    r = await client.post("/api/v1/threads/th_nope/events", json={"type": "human_response", "text": "hi"})
    assert r.status_code == 404
    r = await client.post(f"/api/v1/threads/{thread_id}/events", json={"type": "human_response"})
    assert r.status_code == 422


async def test_a_resume_sent_twice_applies_once(api):
    client, _ = api
    thread_id = (await client.post("/api/v1/threads", json={"agent": "calculator", "text": "6 times 7"})).json()["id"]
    await wait_status(client, thread_id, "waiting_human")
    body = {"type": "human_response", "text": "2"}
    first = await client.post(f"/api/v1/threads/{thread_id}/events", json=body, headers={"Idempotency-Key": "k1"})
    again = await client.post(f"/api/v1/threads/{thread_id}/events", json=body, headers={"Idempotency-Key": "k1"})
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    thread = await wait_status(client, thread_id, "waiting_approval")
    assert sum(e["type"] == "human_response" for e in thread["events"]) == 1


async def test_two_racing_resumes_are_serialised_one_applies(api):
    client, _ = api
    thread_id = (await client.post("/api/v1/threads", json={"agent": "calculator", "text": "6 times 7"})).json()["id"]
    await wait_status(client, thread_id, "waiting_human")
    answers = await asyncio.gather(
        *[
            client.post(f"/api/v1/threads/{thread_id}/events", json={"type": "human_response", "text": t})
            for t in ("2", "3")
        ]
    )
    assert [a.status_code for a in answers] == [202, 202]
    thread = await wait_status(client, thread_id, "waiting_approval")
    await eventually(lambda: _has_note(client, thread_id))
    thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    responses = [e for e in thread["events"] if e["type"] == "human_response"]
    assert len(responses) == 1
    assert [e["kind"] for e in thread["events"] if e["type"] == "note"] == ["stale_resume"]


async def _has_note(client, thread_id):
    thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
    return any(e["type"] == "note" for e in thread["events"])


async def test_list_threads_and_agents(api):
    client, _ = api
    ids = [
        (await client.post("/api/v1/threads", json={"agent": "calculator", "text": f"{i} times 2"})).json()["id"]
        for i in range(3)
    ]
    for thread_id in ids:
        await wait_status(client, thread_id, "waiting_human")
    listed = (await client.get("/api/v1/threads", params={"status": "waiting_human"})).json()["threads"]
    assert {t["id"] for t in listed} >= set(ids)
    assert all(t["agent"] == "calculator" and t["channel"] == "api" for t in listed)
    page = (await client.get("/api/v1/threads", params={"limit": 2})).json()
    assert len(page["threads"]) == 2 and page["next_before"]
    rest = (await client.get("/api/v1/threads", params={"limit": 2, "before": page["next_before"]})).json()["threads"]
    assert not {t["id"] for t in rest} & {t["id"] for t in page["threads"]}
    agents = (await client.get("/api/v1/agents")).json()["agents"]
    calculator = next(a for a in agents if a["name"] == "calculator")
    tools = {t["name"]: t for t in calculator["tools"]}
    assert tools["divide"]["requires_approval"] is True and tools["add"]["requires_approval"] is False
    assert tools["divide"]["parameters"]["required"] == ["a", "b"]
    assert {"request_human_input", "done_for_now"} <= set(tools)
    assert (await client.post("/api/v1/threads", json={"agent": "nobody", "text": "x"})).status_code == 404


async def test_bearer_token_is_required_when_set(settings):
    settings = settings.model_copy(update={"api_token": SecretStr("s3cret-token")})
    async with running(settings, builtins=False, agents=[load_agents]) as rt:
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/api/v1/threads")).status_code == 401
            wrong = await client.get("/api/v1/threads", headers={"Authorization": "Bearer s3cret-tokem"})
            assert wrong.status_code == 401
            right = await client.get("/api/v1/threads", headers={"Authorization": "Bearer s3cret-token"})
            assert right.status_code == 200
            assert (await client.get("/healthz")).status_code == 200


async def test_oversize_body_gets_413_before_anything_else(api):
    client, rt = api
    before = await rt.redis.xlen(rt.keys.inbound(0))
    r = await client.post(
        "/api/v1/threads", content=b"x" * (rt.settings.max_body_bytes + 1), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert await rt.redis.xlen(rt.keys.inbound(0)) == before


async def test_readyz_and_metrics(api):
    client, _ = api
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    metrics = (await client.get("/metrics")).text
    assert "frontdesk_inbound_total" in metrics


async def test_without_a_token_the_api_refuses_a_non_loopback_listener(settings):
    settings = settings.model_copy(update={"http_host": "0.0.0.0"})
    async with running(settings, builtins=False, agents=[load_agents]) as rt:
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/api/v1/threads")
            assert r.status_code == 403 and "FRONTDESK_API_TOKEN" in r.json()["detail"]
            assert (await client.get("/healthz")).status_code == 200


async def test_a_listing_cursor_that_is_not_a_finite_number_gets_422(api):
    """Found by the schemathesis run: `before=NaN` reached Redis as a score bound and answered 500."""
    client, _ = api
    for bad in ("NaN", "inf", "-Infinity", "soon"):
        r = await client.get("/api/v1/threads", params={"before": bad})
        assert r.status_code == 422, (bad, r.status_code, r.text)
    r = await client.get("/api/v1/threads", params={"before": "1700000000000.5"})
    assert r.status_code == 200 and r.json()["threads"] == []
