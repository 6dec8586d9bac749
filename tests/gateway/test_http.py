"""DirectRoutes (gateway/web/app.py) answers every request as FastAPI's own routing would.

The same runtime is mounted in two apps, one with its direct routes and one with
them emptied, so every request goes through FastAPI's router there. For any
method, path, query and body (the channels' real routes, and a probe channel
whose routes take each shape DirectRoutes does and does not call straight), both
apps give the same status, headers and body.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plugins import EchoAgent
from pydantic import SecretStr

from gateway.errors import BadSignature, Malformed, RateLimited, Unavailable
from gateway.protocols import ChannelBase
from gateway.runtime import running
from gateway.web.app import create_app


def _echo(request: Request, route: str, body: bytes, **params: str) -> Response:
    seen = {
        "route": route,
        "params": params,
        "query": sorted(request.query_params.multi_items()),
        "type": request.headers.get("content-type"),
        "body": hashlib.sha256(body).hexdigest(),
    }
    return Response(json.dumps(seen), media_type="application/json", headers={"x-probe": "1"})


FAILURES = {
    "signature": BadSignature("bad signature"),
    "malformed": Malformed("not a form"),
    "rate": RateLimited("slow down", retry_after=7),
    "redis": Unavailable("redis: gone"),
    "http": HTTPException(418, "teapot", headers={"x-why": "tea"}),
    "bug": ValueError("a bug"),
}


def _known(request: Request) -> str:
    return "dependency"


class Probe(ChannelBase):
    """Routes of every shape; each says which route answered and what it read."""

    name = "probe"

    def router(self) -> APIRouter:
        router = APIRouter()

        # Needs FastAPI (a dependency), and comes before the direct route its path also matches.
        @router.post("/probe/fixed")
        async def fixed(request: Request, known: str = Depends(_known)) -> Response:
            return _echo(request, "/probe/fixed", await request.body(), known=known)

        @router.post("/probe/{name}")
        async def named(request: Request, name: str) -> Response:
            return _echo(request, "/probe/{name}", await request.body(), name=name)

        @router.post("/probe/{name}/fail/{kind}")
        async def fail(request: Request, name: str, kind: str) -> Response:
            if kind in FAILURES:
                raise FAILURES[kind]
            return _echo(request, "/probe/{name}/fail/{kind}", await request.body(), name=name, kind=kind)

        @router.post("/probe/number/{n:int}")  # not `[^/]+`: FastAPI's
        async def number(request: Request, n: int) -> Response:
            return _echo(request, "/probe/number/{n:int}", b"", n=str(n))

        @router.get("/probe/{name}")
        async def read(request: Request, name: str) -> Response:
            return _echo(request, "GET /probe/{name}", b"", name=name)

        return router


@pytest.fixture
async def apps(settings):
    settings = settings.model_copy(
        update={
            "webhook_secret": SecretStr("whsec_" + "A" * 32),
            "slack_signing_secret": SecretStr("slack-secret"),
            "slack_bot_token": SecretStr("xoxb-test"),
            "twilio_account_sid": "AC" + "0" * 32,
            "twilio_auth_token": SecretStr("twilio-secret"),
        }
    )
    async with running(settings, agents=[EchoAgent()], channels=[Probe()]) as rt:
        direct, general = create_app(settings, rt), create_app(settings, rt)
        general.state.direct_routes.clear()
        called_straight = [route.path for route, how in direct.state.direct_routes if how is not None]
        assert {"/probe/{name}", "/probe/{name}/fail/{kind}", "/webhooks/{agent}", "/slack/events"} <= set(
            called_straight
        )
        for app in (direct, general):  # handlers by status code and for any error, as an app may add
            app.add_exception_handler(418, _teapot)
            app.add_exception_handler(Exception, _bug)
        yield direct, general


async def _teapot(request: Request, exc: Exception) -> Response:
    return Response("short and stout", status_code=418, headers={"x-handler": "418"})


async def _bug(request: Request, exc: Exception) -> Response:
    return Response(f"handled {type(exc).__name__}", status_code=500)


SEGMENTS = ["probe", "fixed", "fail", "number", "7", "x", "a b", "é", "%2F", "", "signature", "malformed"]
SEGMENTS += [*FAILURES, "webhooks", "echo", "slack", "events", "twilio", "sms", "status", "api", "v1", "threads"]
segments = st.sampled_from(SEGMENTS)
paths = st.one_of(
    st.lists(segments, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.tuples(segments, st.sampled_from([*FAILURES, "none"]), segments).map(
        lambda p: f"/probe/{p[0]}/fail/{p[1]}/{p[2]}"
    ),
    st.tuples(segments, st.sampled_from([*FAILURES, "none"])).map(lambda p: f"/probe/{p[0]}/fail/{p[1]}"),
    st.sampled_from(
        [
            "/probe/fixed",
            "/probe/x/",
            "/probe//x",
            "/probe/number/-3",
            "/webhooks/echo",
            "/slack/events",
            "/twilio/sms",
            "/twilio/status",
        ]
    ),
)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
        "path": paths,
        "params": st.lists(st.tuples(st.sampled_from(["a", "kind", "x y"]), st.text(max_size=5)), max_size=3),
        "content": st.binary(max_size=64) | st.sampled_from([b"", b"{}", b'{"type":"url_verification"}', b"Body=hi"]),
        "headers": st.sampled_from([{}, {"content-type": "application/json"}, {"content-type": "text/plain"}])
        | st.just({"content-type": "application/x-www-form-urlencoded"}),
    }
)


async def _answer(app, request: dict) -> tuple[int, list[tuple[str, str]], bytes]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a bug is the server's 500, as served
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.request(
            request["method"],
            # Absolute: httpx refuses a relative URL whose path starts "//" (an empty first segment).
            f"http://frontdesk.test{request['path']}",
            params=request.get("params"),
            content=request.get("content"),
            headers=request.get("headers"),
        )
    return response.status_code, sorted(response.headers.multi_items()), response.content


# The apps are built once per test: each example is two requests, in process.
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
async def test_a_direct_route_answers_as_fastapi_s_router_would(apps, request):
    direct, general = apps
    assert await _answer(direct, request) == await _answer(general, request)


@pytest.mark.parametrize(
    ("path", "route", "status"),
    [
        ("/probe/fixed", "/probe/fixed", 200),  # the earlier route, though it needs FastAPI
        ("/probe/x", "/probe/{name}", 200),
        ("/probe/x/fail/none", "/probe/{name}/fail/{kind}", 200),
        ("/probe/number/7", "/probe/number/{n:int}", 200),
        ("/probe/x/fail/rate", None, 429),
        ("/probe/x/fail/http", None, 418),
        ("/probe/x/fail/redis", None, 503),
        ("/probe/x/fail/bug", None, 500),
    ],
)
async def test_each_shape_is_answered_by_its_own_route_on_both_apps(apps, path, route, status):
    answers = [await _answer(app, {"method": "POST", "path": path}) for app in apps]
    assert answers[0] == answers[1]
    got, headers, body = answers[0]
    assert got == status
    if route is not None:
        assert json.loads(body)["route"] == route
    if status == 429:
        assert ("retry-after", "7") in headers
    if status == 418:
        assert body == b"short and stout"  # the handler for its status code, not the class's
    if status == 500:
        assert body == b"handled ValueError"
