"""OpenTelemetry: one trace from the inbound request, through the step, to the delivery."""

from __future__ import annotations

import asyncio
import secrets
import sys

import httpx
import pytest
from helpers import background, eventually, make_settings
from plugins import EchoAgent
from recorder import Recorder
from servers import LoopbackServer

from gateway import tracing
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker

pytest.importorskip("opentelemetry.sdk", reason="pip install -e '.[test]' (opentelemetry-sdk)")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def _recorder(runtime) -> Recorder:
    return Recorder(runtime)


async def _post(rt, settings, **headers) -> str:
    transport = httpx.ASGITransport(app=create_app(settings, rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk") as client:
        response = await client.post(
            "/rec/in", json={"id": "m1", "conversation": "c1", "sender": "ann", "text": "hello"}, headers=headers
        )
    assert response.status_code == 202
    return response.json()["thread_id"]


async def test_the_caller_trace_reaches_the_delivery(redis_url, prefix, spans):
    settings = make_settings(redis_url, prefix, default_agent="echo")
    trace_id = secrets.token_hex(16)
    async with running(settings, agents=[EchoAgent()], channels=[_recorder], builtins=False) as rt:
        recorder = rt.channels["rec"]
        async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
            thread_id = await _post(rt, settings, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01")
            await eventually(lambda: recorder.texts(thread_id))
            await eventually(lambda: any(s.name == "frontdesk.deliver" for s in spans.get_finished_spans()))

    ours = {s.name: s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id}
    assert {"POST /rec/in", "frontdesk.inbound", "frontdesk.step", "frontdesk.deliver"} <= set(ours)
    request, inbound, step, deliver = (
        ours[n] for n in ("POST /rec/in", "frontdesk.inbound", "frontdesk.step", "frontdesk.deliver")
    )
    assert inbound.parent.span_id == request.context.span_id
    assert step.parent.span_id == inbound.context.span_id  # across the stream: the `tp` field
    assert deliver.parent.span_id == step.context.span_id  # across the outbox: the message's traceparent
    assert step.attributes["thread_id"] == thread_id
    assert deliver.attributes["outcome"] == "sent"
    assert request.attributes["http.response.status_code"] == 202


async def test_tracing_off_leaves_no_trace_in_redis(settings):
    assert not tracing.enabled()
    settings = settings.model_copy(update={"default_agent": "echo"})
    async with running(settings, agents=[EchoAgent()], channels=[_recorder], builtins=False) as rt:
        async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
            thread_id = await _post(rt, settings)
            await eventually(lambda: rt.channels["rec"].texts(thread_id))
        p = rt.keys.thread_partition(thread_id)
        assert all("tp" not in fields for _, fields in await rt.redis.xrange(rt.keys.inbound(p)))
        assert all(m.traceparent is None for m in rt.channels["rec"].sent)


def test_configure_stays_off_without_an_endpoint(settings):
    assert tracing.configure(settings) is False
    assert not tracing.enabled()


async def test_configure_exports_to_the_collector_the_setting_names(settings):
    """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; spans go to <it>/v1/traces as OTLP/HTTP."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="pip install -e '.[test]'")
    received: list[tuple[str, str, bytes]] = []

    async def collector(scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = dict(scope["headers"])
        received.append((scope["path"], headers.get(b"content-type", b"").decode(), body))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
        )
        await send({"type": "http.response.body", "body": b""})

    with LoopbackServer(collector) as server:
        assert tracing.configure(
            settings.model_copy(update={"otel_endpoint": server.url + "/", "otel_service_name": "fd-test"})
        )
        try:
            with tracing.span("frontdesk.test", thread_id="th_1"):
                assert tracing.traceparent().startswith("00-")
            await asyncio.to_thread(tracing.flush)  # the exporter posts synchronously
        finally:
            await asyncio.to_thread(tracing.shutdown)
    assert not tracing.enabled()
    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    assert b"frontdesk.test" in body and b"fd-test" in body


def test_an_endpoint_without_the_packages_leaves_tracing_off(settings, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None
    )  # as if not installed
    assert tracing.configure(settings.model_copy(update={"otel_endpoint": "http://collector:4318"})) is False
    assert not tracing.enabled()
