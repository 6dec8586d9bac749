"""Health, readiness and metrics, and the uvicorn server that carries them, for every HTTP port.

The gateway's app (gateway.web.app) and the ops port of a worker or SMTP process (gateway.web.ops)
answer the same three paths the same way:
    /healthz   the event loop runs: a liveness probe; no restart for a Redis outage
    /readyz    Redis answers: 503 with Retry-After while it does not
    /metrics   the process's Prometheus registry
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import ConfigError, Unavailable

router = APIRouter(include_in_schema=False)


def unavailable() -> JSONResponse:
    """The answer while Redis is away: 503, and when to ask again."""
    return JSONResponse(
        {"detail": "temporarily unavailable, try again"},
        status_code=503,
        headers={"Retry-After": str(Unavailable.retry_after)},
    )


@router.get("/healthz")
async def healthz() -> dict:
    # The pid tells apart the processes that share a port (gateway.prefork), for a person and for tests.
    return {"status": "ok", "pid": os.getpid()}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    try:
        # An app made without a runtime (tests, before the lifespan) has none: not ready.
        await request.app.state.runtime.redis.ping()
    except (Unavailable, AttributeError):
        return unavailable()
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics() -> Response:
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class Server(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to gateway.serve, which stops every role."""

    # capture_signals is uvicorn's (0.29+) hook around serve(); without this it installs its own handlers.
    # Kept reach-in (uvicorn<1 in pyproject): uvicorn has no public switch for them. Guarded by
    # tests/gateway/test_processes.py::test_sigterm_lets_a_worker_stop_cleanly_and_loses_nothing.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until(
    server: uvicorn.Server,
    stop: asyncio.Event,
    *,
    setting: str,
    on_stop: Callable[[], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until `stop` is set, then finish the requests in flight; `setting` names what to fix if it cannot bind.

    `sock`: an already listening socket to accept on (shared by several processes) instead of binding."""

    async def watch() -> None:
        await stop.wait()
        if on_stop is not None:
            on_stop()
        server.should_exit = True

    watcher = asyncio.create_task(watch())
    try:
        await server.serve(sockets=[sock] if sock is not None else None)
    except SystemExit:
        # uvicorn logs why (usually the port is taken) and calls sys.exit; in a task that
        # would tear the event loop down, so it becomes our error here.
        config = server.config
        raise ConfigError(f"{setting}: cannot listen on {config.host}:{config.port}") from None
    finally:
        watcher.cancel()
