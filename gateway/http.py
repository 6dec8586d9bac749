"""The FastAPI application: health, metrics, the API, and every channel's routes.

The request path only verifies, validates, dedupes and enqueues; everything slow
happens in the workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import tracing
from gateway.api import router as api_router
from gateway.api_ops import router as api_ops_router
from gateway.connection import REDIS_DOWN
from gateway.dashboard import dashboard_router
from gateway.errors import InboundRejected, Unavailable
from gateway.runtime import Runtime, running, tune_gc
from gateway.settings import Settings

log = structlog.get_logger("frontdesk.http")


class BodyLimit:
    """Answer 413 to a body over the limit before any other work (ASGI middleware).

    A declared Content-Length is checked up front; a chunked body is counted as it
    streams, so a client cannot slip past the limit by not declaring a size.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    return await _too_large(send, self.limit)
                break
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, since FastAPI turns other errors met while
    reading a JSON body into 400 but lets these through to their 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


async def _too_large(send, limit: int) -> None:
    body = b'{"detail":"request body larger than %d bytes"}' % limit
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The app; with `runtime` given the caller owns it, else the lifespan opens one."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            _mount(app, runtime)
            yield
            return
        async with running(settings) as rt:
            _mount(app, rt)
            tune_gc()  # this process's start-up is done
            yield

    app = FastAPI(title="frontdesk", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(tracing.TraceRequests)  # outermost; a no-op unless tracing is on
    if runtime is not None:
        _mount(app, runtime)

    @app.exception_handler(InboundRejected)
    async def rejected(request: Request, exc: InboundRejected) -> JSONResponse:
        retry_after = getattr(exc, "retry_after", None)  # RateLimited: when the sender may try again
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return _unavailable()

    for error in REDIS_DOWN:
        app.add_exception_handler(error, lambda request, exc: _unavailable())

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        try:
            await request.app.state.runtime.redis.ping()
        except (*REDIS_DOWN, AttributeError):
            return _unavailable()
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api_router)
    app.include_router(api_ops_router)
    app.include_router(dashboard_router())
    return app


def _mount(app: FastAPI, rt: Runtime) -> None:
    """Attach the runtime and each channel's routes (once)."""
    if getattr(app.state, "runtime", None) is rt:
        return
    app.state.runtime = rt
    before = len(app.router.routes)
    for channel in rt.channels.values():
        router = channel.router() if hasattr(channel, "router") else None
        if router is not None:
            app.include_router(router)
    # Providers' routes first: the router tries routes in order, and the API and dashboard
    # ahead of them cost every webhook about 30 µs of matching (benchmarks/, scenario 1).
    # No path is shared, so the order changes nothing else.
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[:0] = added


def _unavailable() -> JSONResponse:
    return JSONResponse({"detail": "temporarily unavailable, try again"}, status_code=503, headers={"Retry-After": str(Unavailable.retry_after)})
