"""Health and metrics for a process without the HTTP app: `frontdesk worker`, `frontdesk smtp`.

With FRONTDESK_OPS_PORT set, such a process answers `/healthz` (the event loop
runs), `/readyz` (Redis answers) and `/metrics` (its Prometheus registry) on that
port, so Kubernetes probes it and Prometheus scrapes it the way it does the
gateway. Most metrics — steps, model calls, deliveries, queue lag — are recorded
in workers, so without this port they would never be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.connection import REDIS_DOWN
from gateway.errors import ConfigError, Unavailable
from gateway.runtime import Runtime


def create_ops_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="frontdesk ops", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await rt.redis.ping()
        except REDIS_DOWN:
            return JSONResponse(
                {"detail": "redis unavailable"}, status_code=503, headers={"Retry-After": str(Unavailable.retry_after)}
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    # The process's signal handlers (gateway.serve) own SIGTERM/SIGINT; `stop` tells this server.
    # Kept reach-in (uvicorn<1 in pyproject), as in gateway/serve.py's _Server.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def ops_server(rt: Runtime, port: int | None = None) -> uvicorn.Server:
    config = uvicorn.Config(
        create_ops_app(rt),
        host=rt.settings.http_host,
        port=rt.settings.ops_port if port is None else port,
        log_config=None,
        access_log=False,  # a probe every few seconds would drown the worker's own lines
        server_header=False,
        lifespan="off",
    )
    return _Server(config)


async def serve_ops(rt: Runtime, stop: asyncio.Event, server: uvicorn.Server | None = None) -> None:
    """Serve the ops endpoints until `stop` is set (a role of `frontdesk worker` and `frontdesk smtp`)."""
    server = server or ops_server(rt)

    async def watch() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot bind; that is a setting to fix, not a crash
        raise ConfigError(f"FRONTDESK_OPS_PORT: cannot listen on {server.config.host}:{server.config.port}") from None
    finally:
        watcher.cancel()
