"""The HumanLayer agent API under `/humanlayer/v1`, for code written against the `humanlayer` SDK.

Point the SDK at frontdesk with `HUMANLAYER_API_BASE=https://HOST/humanlayer/v1` and
`HUMANLAYER_API_KEY=<FRONTDESK_API_TOKEN>`. The SDK joins its base and paths as strings, so
a base with a trailing slash sends `//function_calls`: `CollapseSlashes` folds that back.
Every answer is a JSON object (the SDK parses the body before it looks at the status, and
its async client refuses any other content type); errors are `{"detail": ...}`.
"""

import re
from typing import Any

from fastapi import APIRouter, Request

from gateway.humanlayer.models import (
    EscalationIn,
    FunctionCallIn,
    FunctionCallStatusIn,
    HumanContactIn,
    HumanContactStatusIn,
)
from gateway.humanlayer.service import HumanLayerCalls, Kind
from gateway.web.api import Caller, runtime

PREFIX = "/humanlayer/v1"
router = APIRouter(prefix=PREFIX, tags=["humanlayer"])
# The same routes at the root, for a base URL set without the `/humanlayer/v1` suffix (left out of the schema).
root_router = APIRouter(include_in_schema=False)
_SLASHES = re.compile(r"/{2,}")
# Paths of this API, with slashes doubled anywhere: under the prefix, or at the root (a base without it).
# A call id is the rest of the path (`{call_id:path}`): the SDK puts it in the URL unencoded, slashes and all.
_OURS = re.compile(r"^/+(humanlayer/+v1/+)?(function_calls|contact_requests|human_contacts|agent|project)(/|$)")


class CollapseSlashes:
    """ASGI middleware: `/humanlayer/v1//function_calls` is `/humanlayer/v1/function_calls`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and "//" in scope["path"] and _OURS.match(scope["path"]):
            path = _SLASHES.sub("/", scope["path"])
            scope = dict(scope, path=path, raw_path=path.encode())
        await self.app(scope, receive, send)


def calls(request: Request) -> HumanLayerCalls:
    return HumanLayerCalls(runtime(request))


def _serve(kind: Kind, create: str, aliases: tuple[str, ...], respond: str, call_in: type, status_in: type) -> None:
    """The routes of one kind of call: create (and its aliases), read, respond, escalate, pending."""

    async def create_call(body: call_in, request: Request, caller: Caller) -> dict[str, Any]:  # type: ignore[valid-type]
        return await calls(request).create(kind, body)

    async def get_call(call_id: str, request: Request, caller: Caller) -> dict[str, Any]:
        return await calls(request).get(kind, call_id)

    async def respond_call(call_id: str, body: status_in, request: Request, caller: Caller) -> dict[str, Any]:  # type: ignore[valid-type]
        return await calls(request).respond(kind, call_id, body, caller)

    async def escalate_call(call_id: str, body: EscalationIn, request: Request, caller: Caller) -> dict[str, Any]:
        return await calls(request).escalate(kind, call_id, body, caller)

    async def pending_calls(request: Request, caller: Caller) -> dict[str, Any]:
        items = await calls(request).pending(kind)
        # The shape the Go client reads since June 2025: an object, never a bare array (module docstring).
        return {"items": items, "total": len(items), "limit": 100, "offset": 0, "has_more": len(items) == 100}

    table: list[tuple[str, str, Any, bool, str]] = []
    for i, path in enumerate((create, *aliases)):  # an alias is served, but left out of the schema
        table += [
            (
                "POST",
                f"/{path}",
                create_call,
                i == 0,
                f"Ask for a {kind}; a second create of a call_id returns the first",
            ),
            (
                "GET",
                f"/{path}/{{call_id:path}}",
                get_call,
                i == 0,
                f"Read a {kind}; its answer is null until a person gives one",
            ),
        ]
    table += [
        (
            "POST",
            f"/agent/{respond}/{{call_id:path}}/respond",
            respond_call,
            True,
            "Answer from code; 409 once answered",
        ),
        ("POST", f"/agent/{respond}/{{call_id:path}}/escalate_email", escalate_call, True, "Send again by email"),
        ("GET", f"/agent/{respond}/pending", pending_calls, True, f"The {kind}s still waiting for a person"),
    ]
    for method, path, endpoint, listed, summary in table:
        name = f"{method.lower()}_{path.strip('/').replace('/', '_').replace('{call_id:path}', 'id')}"
        router.add_api_route(
            path, endpoint, methods=[method], include_in_schema=listed, name=name, operation_id=name, summary=summary
        )
        root_router.add_api_route(path, endpoint, methods=[method], name=f"root_{name}")


_serve("function_call", "function_calls", (), "function_calls", FunctionCallIn, FunctionCallStatusIn)
# The SDK creates and reads contacts at /contact_requests; the API docs name /human_contacts. Both are served.
_serve("human_contact", "contact_requests", ("human_contacts",), "human_contacts", HumanContactIn, HumanContactStatusIn)


# ---------------------------------------------------------------- the project
@root_router.get("/project")
@router.get("/project")
async def project(request: Request, caller: Caller) -> dict[str, Any]:
    """A key check: 200 with the project's names for a good key, 401 otherwise."""
    return {"project_slug": "frontdesk", "org_slug": "frontdesk"}
