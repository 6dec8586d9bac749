"""Acting from the dashboard goes through the API's own paths and is recorded as done by "dashboard";
the operations routes (dead letters, delivery retries) serve scripts the same way."""

from __future__ import annotations

import pytest
from dashkit import TOKEN, dashboard, message, wait_status
from helpers import eventually

from gateway.store import modelhealth

BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_answering_a_question_resumes_the_thread_as_dashboard(settings):
    async with dashboard(settings) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        url = f"/dashboard/threads/{accepted.thread_id}"
        page = await dash.page(url)
        assert "Waiting for an answer" in page.text and "you said &#39;hello&#39;?" in page.text
        r = await dash.post(f"{url}/answer", {"text": "yes, that", "nonce": "n1"})
        assert r.status_code == 303 and r.headers["location"] == f"{url}?flash=answered"
        thread = await wait_status(dash.rt, accepted.thread_id, "done")
        answer = next(e for e in thread.events if e.type == "human_response")
        assert (answer.text, answer.sender, answer.channel) == ("yes, that", "dashboard", "dashboard")
        assert "Answer sent" in (await dash.client.get(f"{url}?flash=answered")).text


async def test_approve_and_deny_with_a_comment_record_who_decided(settings):
    async with dashboard(settings) as dash:
        ids = []
        for i in range(2):
            accepted = await dash.rt.ingest.accept(message(f"m{i}", f"v{i}", channel="api"), "approver")
            await wait_status(dash.rt, accepted.thread_id, "waiting_approval")
            ids.append(accepted.thread_id)
        await dash.page(f"/dashboard/threads/{ids[0]}")
        for thread_id, decision in zip(ids, ("approve", "deny"), strict=False):
            r = await dash.post(
                f"/dashboard/threads/{thread_id}/decide",
                {"call_id": "call-1", "decision": decision, "comment": f"{decision} it", "nonce": thread_id},
                headers={"X-Requested-With": "fetch"},
            )
            assert r.status_code == 202, r.text
        for thread_id, approved in zip(ids, (True, False), strict=False):
            thread = await wait_status(dash.rt, thread_id, "done")
            decision = next(e for e in thread.events if e.type == "approval_decision")
            assert (decision.approved, decision.by, decision.comment) == (
                approved,
                "dashboard",
                f"{'approve' if approved else 'deny'} it",
            )
            assert thread.events[-1].text == f"{'approved' if approved else 'denied'} by dashboard"


async def test_a_form_sent_twice_is_one_answer_and_a_late_one_is_a_conflict(settings):
    async with dashboard(settings) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "v1", channel="api"), "approver")
        await wait_status(dash.rt, accepted.thread_id, "waiting_approval")
        url = f"/dashboard/threads/{accepted.thread_id}"
        await dash.page(url)
        form = {"call_id": "call-1", "decision": "approve", "nonce": "same"}
        first = await dash.post(f"{url}/decide", form, headers={"X-Requested-With": "fetch"})
        again = await dash.post(f"{url}/decide", form, headers={"X-Requested-With": "fetch"})
        assert (
            first.json()["message"].startswith("Approval sent") and again.json()["message"] == "That was sent already."
        )
        thread = await wait_status(dash.rt, accepted.thread_id, "done")
        assert [e.type for e in thread.events].count("approval_decision") == 1
        late = await dash.post(f"{url}/decide", {**form, "nonce": "other"}, headers={"X-Requested-With": "fetch"})
        assert late.status_code == 409 and "waits for no answer" in late.json()["message"]
        wrong_call = await dash.post(f"{url}/answer", {"text": "hm"})
        assert wrong_call.status_code == 409 and "waits for no answer" in wrong_call.text
        assert (await dash.post("/dashboard/threads/th_missing/answer", {"text": "x"})).status_code == 404
        assert (await dash.post(f"{url}/decide", {"call_id": "call-1", "decision": "maybe"})).status_code == 422


async def test_retrying_a_failed_delivery_from_the_dashboard(settings, sink):
    settings = settings.model_copy(update={"delivery_attempts": 1})
    sink.failing = True
    async with dashboard(settings, sink) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello"), "echo")
        thread = await wait_status(dash.rt, accepted.thread_id, "failed")
        failed = next(e for e in thread.events if e.type == "delivery")
        assert failed.status == "failed" and failed.outbound_id == f"{accepted.thread_id}-1"
        url = f"/dashboard/threads/{accepted.thread_id}"
        page = await dash.page(url)
        assert "Retry delivery" in page.text
        sink.failing = False
        r = await dash.post(f"{url}/deliveries/{failed.outbound_id}/retry")
        assert r.status_code == 303 and r.headers["location"].endswith("flash=retried")
        # The delivery succeeds now: the thread leaves `failed` by itself and waits again.
        thread = await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        tail = [(e.type, getattr(e, "status", None) or getattr(e, "kind", None)) for e in thread.events[2:]]
        assert tail == [("delivery", "failed"), ("note", "delivery_retry"), ("delivery", "sent")]
        note = thread.events[3]
        assert note.sender == "dashboard" and failed.outbound_id in note.text
        assert [m["text"] for m in sink.received] == ["you said 'hello'?"]
        assert "Retry delivery" not in (await dash.page(url)).text
        again = await dash.post(f"{url}/deliveries/{failed.outbound_id}/retry", headers={"X-Requested-With": "fetch"})
        assert again.status_code == 404 and "not in the dead-letter stream" in again.json()["message"]


async def test_the_ops_api_lists_dead_letters_and_retries_deliveries_for_scripts(settings, sink):
    settings = settings.model_copy(update={"delivery_attempts": 1})
    sink.failing = True
    async with dashboard(settings, sink) as dash:
        client = dash.client
        accepted = await dash.rt.ingest.accept(message("m1", "hello"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "failed")
        assert (await client.get("/api/v1/dlq")).status_code == 401  # the API wants its bearer token
        listed = (await client.get("/api/v1/dlq", headers=BEARER)).json()["dead_letters"]
        assert len(listed) == 1
        dead = listed[0]
        assert (dead["source"], dead["kind"], dead["thread_id"]) == ("outbox", "outbound", accepted.thread_id)
        assert dead["outbound_id"] == f"{accepted.thread_id}-1" and "sink said 500" in dead["reason"]
        sink.failing = False
        base = f"/api/v1/threads/{accepted.thread_id}/deliveries"
        assert (await client.post(f"{base}/{accepted.thread_id}-9/retry", headers=BEARER)).status_code == 404
        assert (await client.post("/api/v1/threads/th_nope/deliveries/x/retry", headers=BEARER)).status_code == 404
        r = await client.post(f"{base}/{dead['outbound_id']}/retry", headers=BEARER)
        assert r.status_code == 202 and r.json() == {"retried": dead["outbound_id"], "dead_letter": dead["id"]}
        thread = await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        assert next(e for e in thread.events if e.type == "note").sender == "api"
        assert (await client.get("/api/v1/dlq", headers=BEARER)).json()["dead_letters"] == []


async def test_replaying_a_dead_lettered_step_from_the_thread_and_from_the_api(settings, monkeypatch):
    settings = settings.model_copy(update={"max_attempts": 1})
    async with dashboard(settings) as dash:
        ids = []
        for i in range(2):
            accepted = await dash.rt.ingest.accept(message(f"m{i}", "hi", channel="api"), "broken")
            ids.append(accepted.thread_id)
        for thread_id in ids:
            thread = await wait_status(dash.rt, thread_id, "failed")
            assert thread.events[-1].kind == "dead_letter"
        listed = (await dash.client.get("/api/v1/dlq", headers=BEARER)).json()["dead_letters"]
        assert {d["thread_id"] for d in listed} == set(ids) and {d["kind"] for d in listed} == {"inbound"}
        monkeypatch.setenv("TEST_BROKEN_FIXED", "1")  # the fix is deployed
        # From the thread page: the dead-letter error offers a replay of its entry.
        url = f"/dashboard/threads/{ids[0]}"
        page = await dash.page(url)
        assert "Replay this entry" in page.text
        source = next(d for d in listed if d["thread_id"] == ids[0])["source_id"]
        r = await dash.post(f"{url}/replay", {"source_id": source}, headers={"X-Requested-With": "fetch"})
        assert r.status_code == 202, r.text
        # From a script: the API's replay route, by the id `GET /api/v1/dlq` gave.
        other = next(d for d in listed if d["thread_id"] == ids[1])
        assert (await dash.client.post("/api/v1/dlq/0:1-1/replay", headers=BEARER)).status_code == 404
        assert (await dash.client.post("/api/v1/dlq/zz/replay", headers=BEARER)).status_code == 400
        r = await dash.client.post(f"/api/v1/dlq/{other['id']}/replay", headers=BEARER)
        assert r.status_code == 202 and r.json()["thread_id"] == ids[1]
        for thread_id, by in zip(ids, ("dashboard", "api"), strict=False):
            thread = await wait_status(dash.rt, thread_id, "done")
            note = next(e for e in thread.events if e.type == "note")
            assert note.kind == "replay" and note.sender == by
        assert (await dash.client.get("/api/v1/dlq", headers=BEARER)).json()["dead_letters"] == []


@pytest.mark.parametrize("path", ["/dashboard/dlq/0:1-1/replay", "/dashboard/dlq/bad/replay"])
async def test_replaying_what_is_not_there_says_so(settings, path):
    async with dashboard(settings, workers=False) as dash:
        await dash.page("/dashboard/health")
        r = await dash.post(path, headers={"X-Requested-With": "fetch"})
        assert r.status_code in (400, 404) and r.json()["ok"] is False


async def test_health_replays_a_dead_letter_and_shows_the_queues(settings, sink):
    settings = settings.model_copy(update={"delivery_attempts": 1})
    async with dashboard(settings, sink) as dash:
        accepted = await dash.rt.ingest.accept(message("ok1", "hello"), "echo")
        await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        sink.failing = True
        failing = await dash.rt.ingest.accept(message("bad1", "hello"), "echo")
        await wait_status(dash.rt, failing.thread_id, "failed")
        page = await dash.page("/dashboard/health")
        assert page.status_code == 200
        text = page.text
        assert "Workers seen" in text and "<code>w1</code>" in text
        assert "workers (inbound)" in text and "senders (outbox)" in text
        row = text[text.index("Deliveries, last hour") :]
        assert '<td>test</td><td class="num">1</td><td class="num warn">1</td>' in row
        assert f"{failing.thread_id}-1" in text
        dead = (await dash.client.get("/api/v1/dlq", headers=BEARER)).json()["dead_letters"][0]
        sink.failing = False
        r = await dash.post(f"/dashboard/dlq/{dead['id']}/replay")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/health?flash=replayed"
        await wait_status(dash.rt, failing.thread_id, "waiting_human")
        body = await eventually(lambda: _partial_without_dead_letters(dash))
        assert "None. Entries that fail" in body


async def _partial_without_dead_letters(dash):
    r = await dash.client.get("/dashboard/health?partial=body")
    return r.text if "None. Entries that fail" in r.text else None


async def test_health_shows_each_models_shape_and_last_error(settings):
    async with dashboard(settings, workers=False) as dash:
        page = await dash.page("/dashboard/health")
        assert "No model has been called yet." in page.text
        rt = dash.rt
        await modelhealth.report_shape(
            rt.redis, rt.keys, "openai:smollm2", "http://127.0.0.1:8080/v1", "tool_choice=auto"
        )
        await modelhealth.report_error(
            rt.redis, rt.keys, "openai:other", "http://127.0.0.1:9/v1", "", "openai: 503 <b>down</b>"
        )
        text = (await dash.page("/dashboard/health")).text
        models = text[text.index("<h2>Models</h2>") : text.index("Deliveries, last hour")]
        assert "<code>openai:smollm2</code>" in models and "http://127.0.0.1:8080/v1" in models
        assert "<td>tool_choice=auto</td>" in models
        # The server's words are escaped: an error body is not markup.
        assert "openai: 503 &lt;b&gt;down&lt;/b&gt;" in models
