"""Health and metrics for a process without the HTTP app: `frontdesk worker`, `frontdesk smtp`.

With FRONTDESK_OPS_PORT set, such a process answers `/healthz` (the event loop
runs), `/readyz` (Redis answers) and `/metrics` (its Prometheus registry) on that
port, so Kubernetes probes it and Prometheus scrapes it the way it does the
gateway. Most metrics — steps, model calls, deliveries, queue lag — are recorded
in workers, so without this port they would never be seen.
"""

from __future__ import annotations

import asyncio

import uvicorn
from fastapi import FastAPI

from gateway.runtime import Runtime
from gateway.web import probes


def create_ops_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="frontdesk ops", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = rt  # what /readyz pings
    app.include_router(probes.router)
    return app


def ops_server(rt: Runtime, port: int | None = None) -> uvicorn.Server:
    port = rt.settings.ops_port if port is None else port
    if port is None:
        raise ValueError("FRONTDESK_OPS_PORT is not set")
    config = uvicorn.Config(
        create_ops_app(rt),
        host=rt.settings.http_host,
        port=port,
        log_config=None,
        access_log=False,  # a probe every few seconds would drown the worker's own lines
        server_header=False,
        lifespan="off",
        ws="none",  # no WebSocket routes: see serve.py
    )
    return probes.Server(config)


async def serve_ops(rt: Runtime, stop: asyncio.Event, server: uvicorn.Server | None = None) -> None:
    """Serve the ops endpoints until `stop` is set (a role of `frontdesk worker` and `frontdesk smtp`)."""
    await probes.serve_until(server or ops_server(rt), stop, setting="FRONTDESK_OPS_PORT")
