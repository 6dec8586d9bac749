"""The FastAPI application: health, metrics, the API, and every channel's routes.

The request path only verifies, validates, dedupes and enqueues; everything slow
happens in the workers.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from gateway import tracing
from gateway.errors import InboundRejected, Unavailable
from gateway.humanlayer.routes import CollapseSlashes
from gateway.humanlayer.routes import root_router as humanlayer_root_router
from gateway.humanlayer.routes import router as humanlayer_router
from gateway.runtime import Runtime, running, tune_gc
from gateway.settings import Settings
from gateway.web import probes
from gateway.web.api import router as api_router
from gateway.web.api_ops import router as api_ops_router
from gateway.web.dashboard import dashboard_router

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
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class _Direct:
    request_param: str
    call: Callable[..., Awaitable[Response]]


# Kept reach-in (fastapi<1 in pyproject): a copy of Starlette's private exception-handler lookup
# (`_handler_for`), for the 40 % of a webhook's app CPU in the docstring (benchmarks/, scenario 1).
class DirectRoutes:
    """ASGI middleware: the providers' POST routes called straight, past FastAPI's routing.

    A provider's request (a webhook, a Slack event, an SMS) is read from the raw
    `Request` by the channel itself, so FastAPI's per-request machinery — the router
    walk, dependency solving, two exit stacks, the exception wrappers — is all cost:
    about 40 % of the app's CPU on `POST /webhooks/{agent}` (benchmarks/, scenario 1).
    A route qualifies when its endpoint takes only the `Request` and `str` path
    parameters and returns a `Response` (`_direct`); FastAPI keeps the route, so the
    OpenAPI schema and every other method are unchanged.

    `routes` are the channels' routes, in the order the app's router tries them, ahead
    of every other route (`_mount`), each with how to call it straight or None. They
    are matched as the router matches them (`BaseRoute.matches`: the first full match
    wins), so the route that answers is the one the router would pick; when that one
    needs FastAPI, FastAPI answers. This sits inside
    the body limit and tracing middleware, and its errors go to the app's exception
    handlers, so a direct route answers exactly as the FastAPI route would
    (tests/gateway/test_http.py compares the two on generated requests).
    """

    def __init__(self, app, routes: list[tuple[BaseRoute, _Direct | None]]) -> None:
        self.app = app
        self.routes = routes  # filled by `_mount`

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            for route, direct in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    if direct is None:
                        break
                    scope.update(child)
                    return await self._call(direct, child["path_params"], scope, receive, send)
        await self.app(scope, receive, send)

    async def _call(self, direct: _Direct, params: dict[str, str], scope, receive, send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await direct.call(**params, **{direct.request_param: request})
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # the server error middleware's 500 (and its handler, if any), as on any route
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)


def _direct(route: Any) -> _Direct | None:
    """How to call `route` directly, or None when it needs FastAPI (dependencies, a body model, a response model)."""
    if not isinstance(route, APIRoute) or not route.methods or "POST" not in route.methods or route.dependencies:
        return None
    try:
        hints = typing.get_type_hints(route.endpoint)
    except (NameError, TypeError):
        return None
    returns = hints.get("return")
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        return None
    request_param = None
    for name in inspect.signature(route.endpoint).parameters:
        if hints.get(name) is Request:
            request_param = name
        elif not (
            name in route.param_convertors and hints.get(name) is str and route.param_convertors[name].regex == "[^/]+"
        ):
            return None
    if request_param is None:
        return None
    return _Direct(request_param, route.endpoint)


def _handler_for(handlers: dict[Any, Callable], exc: Exception) -> Callable | None:
    """The handler Starlette's exception middleware would run: by status code for an
    HTTPException, else by class. `Exception` and 500 belong to the server error
    middleware, which a re-raised error reaches as from any route."""
    if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls in handlers and cls is not Exception:
            return handlers[cls]
    return None


# Recent FastAPI releases trace requests themselves once an OpenTelemetry provider exists, and
# ask whether one does on every request. Our own middleware (gateway/tracing.py) owns the
# request spans: theirs would be a second span per request, and the question a cost on each.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


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

    app = FastAPI(title="frontdesk", version="0.1.0", lifespan=lifespan, **_NO_NATIVE_TELEMETRY)
    app.state.direct_routes = []
    app.add_middleware(DirectRoutes, routes=app.state.direct_routes)  # innermost: inside the body limit and tracing
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CollapseSlashes)  # before routing: the HumanLayer SDK may send `//` (gateway/humanlayer)
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
        return probes.unavailable()

    app.include_router(probes.router)
    app.include_router(api_router)
    app.include_router(api_ops_router)
    app.include_router(humanlayer_router)
    app.include_router(humanlayer_root_router)
    app.include_router(dashboard_router())
    return app


def _mount(app: FastAPI, rt: Runtime) -> None:
    """Attach the runtime and each channel's routes (once)."""
    if getattr(app.state, "runtime", None) is rt:
        return
    app.state.runtime = rt
    before = len(app.router.routes)
    channel_routes: list[BaseRoute] = []
    for channel in rt.channels.values():
        router = channel.router()
        if router is not None:
            app.include_router(router)  # included without a prefix: its routes' own paths are the app's
            channel_routes += router.routes  # in the order the app's router tries them, once at its front
    # Providers' routes first: the router tries routes in order, and the API and dashboard
    # ahead of them cost every webhook about 30 µs of matching (benchmarks/, scenario 1).
    # No path is shared, so the order changes nothing else.
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[:0] = added
    app.state.direct_routes[:] = [(route, _direct(route)) for route in channel_routes]
