"""Model faults: a failing model becomes error events and, after three, a question to a person.

The kit's agent (faultkit.FaultAgent) talks to an OpenAI-compatible server on
loopback through the real `openai` client (no SDK retries, a short timeout). Each
thread names the fault its model calls meet; healthy threads run beside them and
after them, on the same worker, to show it keeps serving.
"""

from __future__ import annotations

import re
from collections import Counter

import faultkit
from aiohttp import web
from faultctl import Control, completion, params
from helpers import background, eventually
from pydantic import SecretStr

from gateway.events import InboundMessage
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.worker import Worker

# fault -> the error kind it must leave on the thread (None: it recovers and finishes)
FAULTS = {
    "ratelimit": "model_error",  # 429 with Retry-After
    "error": "model_error",  # 500
    "timeout": "model_error",  # no answer within FRONTDESK_MODEL_TIMEOUT
    "badjson": "invalid_json",  # a tool call whose arguments are not JSON
    "notool": "no_tool_call",  # text, no tool call
    "unknown": "unknown_tool",  # a tool the agent does not have
    "flaky": None,  # one 500, then well
}


def model_faults(control: Control):
    calls: Counter = Counter()

    async def rule(blocks, body) -> web.StreamResponse | None:
        first = next(b for b in blocks if b.tag == "user_message")
        fault = params(first.body).get("model")
        thread = re.search(r"thread: (\S+)", body["messages"][0]["content"]).group(1)
        calls[thread] += 1
        if fault == "ratelimit":
            return web.json_response(
                {"error": {"message": "Rate limit reached", "type": "requests"}},
                status=429,
                headers={"Retry-After": "0"},
            )
        if fault == "error" or (fault == "flaky" and calls[thread] == 1):
            return web.json_response(
                {"error": {"message": "The server had an error", "type": "server_error"}}, status=500
            )
        if fault == "timeout":
            return await control.hold()
        if fault == "garbage":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if fault == "badjson":
            return web.json_response(completion("work", '{"n": 0,,', model=body["model"]))
        if fault == "notool":
            return web.json_response(completion(None, model=body["model"], text="I think we are done here."))
        if fault == "unknown":
            return web.json_response(completion("rm_rf", {"path": "/"}, model=body["model"]))
        return None  # the script's answer

    return rule


async def _settled(rt, tid: str) -> bool:
    return (await rt.store.meta(tid)).get("status") in ("waiting_human", "done", "failed")


def _settings(settings, control: Control, **values):
    base = dict(
        model="openai:fault",
        openai_base_url=f"{control.url}/v1",
        openai_api_key=SecretStr("k"),
        model_retries=0,
        model_timeout=0.5,
        rate_limit=0,
    )
    return settings.model_copy(update={**base, **values})


def _start(run: str, text: str) -> InboundMessage:
    return InboundMessage(id=f"start-{run}", channel="test", conversation=f"run-{run}", sender="tester", text=text)


async def _status(rt, tid: str, status: str) -> bool:
    return (await rt.store.meta(tid)).get("status") == status


async def test_model_faults_become_error_events_then_a_question_and_the_worker_serves_on(
    settings, control, monkeypatch
):
    monkeypatch.setenv("FAULT_CONTROL_URL", control.url)
    control.model_rule = model_faults(control)
    settings = _settings(settings, control)
    async with running(settings, builtins=False, agents=[faultkit.agents], channels=[faultkit.channels]) as rt:
        faulty = {
            f: (await rt.ingest.accept(_start(f, f"run={f} model={f} steps=2"), "faulty")).thread_id for f in FAULTS
        }
        healthy = [
            (await rt.ingest.accept(_start(f"ok{i}", f"run=ok{i} steps=3"), "faulty")).thread_id for i in range(3)
        ]
        async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
            for fault, tid in faulty.items():
                await eventually(
                    lambda: _status(rt, tid, "done" if FAULTS[fault] is None else "waiting_human"), timeout=30
                )
            for tid in healthy:
                await eventually(lambda: _status(rt, tid, "done"), timeout=30)
            # The same worker takes new work after all that.
            later = (await rt.ingest.accept(_start("later", "run=later steps=2"), "faulty")).thread_id
            await eventually(lambda: _status(rt, later, "done"), timeout=30)
            # Each escalation reached the person it asks.
            await eventually(lambda: len(control.inbox) >= len(FAULTS) + len(healthy) + 1, timeout=30)

        summary = {}
        for fault, tid in faulty.items():
            thread = await rt.store.load(tid)
            kinds = [e.kind for e in thread.events if e.type == "error"]
            summary[fault] = kinds
            if FAULTS[fault] is None:
                assert kinds == ["model_error"] and thread.events[-2].type == "done_for_now", (fault, kinds)
                continue
            said = [e.type for e in thread.events if e.type != "delivery"]
            assert said == ["user_message", "error", "error", "error", "request_human_input"], (fault, said)
            assert kinds == [FAULTS[fault]] * 3, (fault, kinds)
            ask = thread.events[-2] if thread.events[-1].type == "delivery" else thread.events[-1]
            assert ask.text.startswith("I keep running into errors"), ask.text
        print(f"\nmodel faults: {summary}")
        assert not await rt.streams.dlq_entries()  # no step failed outright: every fault became an event


async def test_a_model_answering_200_with_a_page_that_is_not_json_is_an_error_event(settings, control, monkeypatch):
    monkeypatch.setenv("FAULT_CONTROL_URL", control.url)
    control.model_rule = model_faults(control)
    async with running(
        _settings(settings, control, max_attempts=1),
        builtins=False,
        agents=[faultkit.agents],
        channels=[faultkit.channels],
    ) as rt:
        tid = (await rt.ingest.accept(_start("garbage", "run=garbage model=garbage steps=2"), "faulty")).thread_id
        async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
            await eventually(lambda: _settled(rt, tid), timeout=30)
        thread = await rt.store.load(tid)
    assert [e.kind for e in thread.events if e.type == "error"] == ["model_error"] * 3, thread.events
