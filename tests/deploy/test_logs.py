"""JSON log lines about a thread name it, its agent, its channel and the entry being handled."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from helpers import background, eventually
from plugins import EchoAgent, FailingAgent
from recorder import Recorder

import gateway.outbox as outbox_module
import gateway.worker as worker_module
from gateway.events import InboundMessage
from gateway.logs import configure_logging
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.worker import Worker

CONTEXT = ("thread_id", "agent", "channel", "event_id")


@pytest.fixture
def json_lines(settings, monkeypatch):
    # structlog caches a logger's processors at its first use (cache_logger_on_first_use): a module
    # logger first used under another test's configuration (helpers.plain_tracebacks) would keep
    # rendering console lines. Fresh proxies for the two modules read here take this configuration.
    for module, name in ((worker_module, "frontdesk.worker"), (outbox_module, "frontdesk.outbox")):
        monkeypatch.setattr(module, "log", structlog.get_logger(name))
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging(settings.model_copy(update={"log_format": "json", "log_level": "info"}), stream=buffer)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_frontdesk", False)]:
            root.removeHandler(handler)
        root.setLevel(level)


async def test_worker_and_sender_lines_carry_the_thread_context(settings, json_lines):
    settings = settings.model_copy(update={"max_attempts": 1})
    recorder = Recorder()
    async with running(settings, agents=[EchoAgent(), FailingAgent()], channels=[recorder], builtins=False) as rt:
        async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
            ok = await rt.ingest.accept(
                InboundMessage(id="m1", channel="rec", conversation="c1", sender="ann", text="hi"), "echo"
            )
            bad = await rt.ingest.accept(
                InboundMessage(id="m2", channel="rec", conversation="c2", sender="bob", text="hi"), "broken"
            )
            # The sender logs "delivered" after the send returns and its outcome is written: wait for the line.
            await eventually(lambda: any(line.get("event") == "delivered" for line in json_lines()))
            await eventually(lambda: any(line.get("thread_id") == bad.thread_id for line in json_lines()))

    lines = [line for line in json_lines() if line.get("logger") in ("frontdesk.worker", "frontdesk.outbox")]
    delivered = next(line for line in lines if line["event"] == "delivered")
    failed = next(line for line in lines if line["event"] == "step failed")
    assert (delivered["thread_id"], delivered["agent"], delivered["channel"]) == (ok.thread_id, "echo", "rec")
    assert (failed["thread_id"], failed["agent"], failed["channel"]) == (bad.thread_id, "broken", "rec")
    for line in lines:
        if "thread_id" in line:
            assert all(line.get(name) for name in CONTEXT), line
