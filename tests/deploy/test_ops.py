"""Operability of the roles without the HTTP app: health, readiness, metrics, queue gauges."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
from helpers import free_port, make_settings
from prometheus_client import REGISTRY

from gateway.runtime import running
from gateway.store.streams import Streams
from gateway.web.ops import create_ops_app, ops_server, serve_ops

HEALTHCHECK = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


async def _get(app, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops") as client:
        return await client.get(path)


async def test_ops_endpoints_answer_health_readiness_and_metrics(settings):
    async with running(settings, builtins=False) as rt:
        app = create_ops_app(rt)
        assert (await _get(app, "/healthz")).json() == {"status": "ok", "pid": os.getpid()}
        assert (await _get(app, "/readyz")).status_code == 200
        metrics = await _get(app, "/metrics")
        assert "frontdesk_inbound_total" in metrics.text and "frontdesk_queue_lag" in metrics.text


async def test_not_ready_while_redis_is_away(prefix):
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0", prefix)
    async with running(settings, builtins=False) as rt:
        app = create_ops_app(rt)
        assert (await _get(app, "/healthz")).status_code == 200  # alive: no restart for a Redis outage
        ready = await _get(app, "/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"]


async def test_queue_gauges_count_unread_and_unacknowledged(settings):
    async with running(settings, builtins=False) as rt:
        streams = Streams(rt.redis, rt.keys)
        stream = rt.keys.inbound(0)
        await streams.ensure_group(stream, "g")
        for i in range(5):
            await rt.redis.xadd(stream, {"n": str(i)})
        await rt.redis.xreadgroup("g", "c1", {stream: ">"}, count=2)
        assert await streams.backlog(stream, "g") == (3, 2)
        await streams.record_backlog(stream, "g", "inbound", 99)
        labels = {"stream": "inbound", "partition": "99"}
        assert REGISTRY.get_sample_value("frontdesk_queue_lag", labels) == 3
        assert REGISTRY.get_sample_value("frontdesk_queue_pending", labels) == 2
        assert await streams.backlog(stream, "no-such-group") is None


async def _healthcheck(**env: str) -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(HEALTHCHECK), env={**os.environ, **env})
    return await proc.wait()


async def test_image_healthcheck_finds_the_role_that_answers(settings):
    """The one HEALTHCHECK serves every role: here a worker's ops port answers, the HTTP port does not."""
    port = free_port()
    async with running(settings, builtins=False) as rt:
        stop = asyncio.Event()
        server = ops_server(rt, port=port)
        task = asyncio.create_task(serve_ops(rt, stop, server))
        try:
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.02)
            assert await _healthcheck(FRONTDESK_HTTP_PORT=str(free_port()), FRONTDESK_OPS_PORT=str(port)) == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
        assert await _healthcheck(FRONTDESK_HTTP_PORT=str(free_port()), FRONTDESK_OPS_PORT=str(port)) == 1
