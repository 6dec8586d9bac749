"""The HTTP API (factor 6): launch a thread, read it, resume it; list the agents."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field, FiniteFloat

from gateway.errors import Conflict, NotFound
from gateway.events import STATUSES, Contact, Thread, pending_request
from gateway.launch import launch_thread
from gateway.runtime import Runtime
from gateway.store.entries import Entry

router = APIRouter(prefix="/api/v1", tags=["api"])


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def authorized(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's identity; a bearer token is required when FRONTDESK_API_TOKEN is set.

    Without a token the API answers only on a loopback listener: anyone who can reach
    the port is then on this machine (the same rule as the dashboard's).
    """
    rt = runtime(request)
    token = rt.settings.api_token
    if token is None:
        if not rt.settings.http_on_loopback:
            raise HTTPException(403, "set FRONTDESK_API_TOKEN: without one the API answers only on a loopback address")
        return "api"
    given = (authorization or "").removeprefix("Bearer ").strip()
    # Constant-time, so the comparison leaks nothing about how much of a guess was right.
    if not given or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    return "api"


Caller = Annotated[str, Depends(authorized)]


class ContactIn(BaseModel):
    channel: Literal["slack", "sms", "whatsapp", "email", "webhook"]
    address: str = Field(min_length=1, max_length=512)


class LaunchIn(BaseModel):
    agent: str
    text: str = Field(min_length=1, max_length=100_000)
    contact: ContactIn | None = None


class Launched(BaseModel):
    id: str
    status: str


class HumanResponseIn(BaseModel):
    type: Literal["human_response"]
    text: str = Field(min_length=1, max_length=100_000)


class ApprovalIn(BaseModel):
    type: Literal["approval_decision"]
    call_id: str
    approved: bool
    comment: str | None = Field(default=None, max_length=10_000)


ResumeIn = Annotated[HumanResponseIn | ApprovalIn, Field(discriminator="type")]


@router.post("/threads", status_code=201, response_model=Launched)
async def launch(body: LaunchIn, request: Request, caller: Caller) -> Launched:
    rt = runtime(request)
    contact = Contact(channel=body.contact.channel, address=body.contact.address) if body.contact else None
    thread = await launch_thread(rt, body.agent, body.text, contact, by=caller)
    assert thread is not None  # None only when a given thread_id exists already; none is given here
    return Launched(id=thread.id, status=thread.status)


@router.get("/threads")
async def list_threads(
    request: Request,
    caller: Caller,
    status: Annotated[Literal[STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    # Finite only: Redis refuses NaN as a score bound (a 500 the fuzzer found); infinities mean nothing here.
    # FiniteFloat, not Query(allow_inf_nan=False): FastAPI 0.110 with pydantic 2.7 did not apply that to `| None`.
    before: Annotated[FiniteFloat | None, Query(description="updated-at cursor (ms) from the previous page")] = None,
) -> dict[str, Any]:
    rt = runtime(request)
    rows = await rt.store.list(status=status, limit=limit, before=before)
    threads = [thread_summary(m) for m in rows]
    cursor = None
    if len(threads) == limit:
        cursor = threads[-1]["updated_ms"]
    return {"threads": threads, "next_before": cursor}


def thread_summary(meta: dict[str, str]) -> dict[str, Any]:
    """A thread's summary row from its stored metadata: the API's listing and `frontdesk threads list --json`."""
    updated = meta.get("updated_at", "")
    return {
        "id": meta.get("id"),
        "agent": meta.get("agent"),
        "status": meta.get("status"),
        "channel": meta.get("channel"),
        "person": meta.get("person"),
        "created_at": meta.get("created_at"),
        "updated_at": updated,
        "updated_ms": int(datetime.fromisoformat(updated).timestamp() * 1000) if updated else None,
        "events": int(meta.get("events", 0)),
    }


@router.get("/threads/{thread_id}")
async def read_thread(thread_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    thread = await runtime(request).store.load(thread_id)
    if thread is None:
        raise NotFound("no such thread")
    return thread.public()


@router.post("/threads/{thread_id}/events", status_code=202)
async def resume(
    thread_id: str,
    body: ResumeIn,
    request: Request,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, Any]:
    fresh = await submit_resume(runtime(request), thread_id, body, caller, idempotency_key)
    return {"id": thread_id, "accepted": True, "duplicate": not fresh}


async def submit_resume(
    rt: Runtime, thread_id: str, body: HumanResponseIn | ApprovalIn, by: str, idempotency_key: str | None = None
) -> bool:
    """Queue an answer for the thread (API, dashboard); False for a duplicate of an earlier one.

    NotFound without such a thread, Conflict unless it waits for this kind of answer.
    """
    thread = await rt.store.load(thread_id)
    if thread is None:
        raise NotFound("no such thread")
    check_resume(thread, body)
    data = body.model_dump(exclude_none=True) | {"by": by}
    if idempotency_key:
        data["id"] = idempotency_key
    return await rt.ingest.enqueue(Entry(kind="resume", thread_id=thread_id, data=data), dedupe_id=idempotency_key)


def check_resume(thread: Thread, body: HumanResponseIn | ApprovalIn) -> None:
    """409 unless the thread waits for exactly this kind of answer."""
    waiting = pending_request(thread.events)
    if waiting is None:
        raise Conflict(f"thread is {thread.status}; it waits for no answer")
    request = waiting[1]
    if body.type == "human_response" and request.type != "request_human_input":
        raise Conflict("thread waits for an approval decision, not a human_response")
    if body.type == "approval_decision":
        if request.type != "approval_requested":
            raise Conflict("thread waits for a human_response, not an approval decision")
        if request.call_id != body.call_id:
            raise Conflict(f"thread waits for a decision on call {request.call_id!r}")


@router.get("/agents")
async def list_agents(request: Request, caller: Caller) -> dict[str, Any]:
    rt = runtime(request)
    routes = rt.router.routes_by_agent(rt.channels)
    return {
        "agents": [
            {"name": a.name, "description": a.description, "tools": a.tools(), "routes": routes.get(a.name, [])}
            for a in sorted(rt.agents.values(), key=lambda a: a.name)
        ]
    }
