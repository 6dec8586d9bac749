"""Operations on what went wrong, for scripts and the dashboard alike.

    GET  /api/v1/dlq                                            dead letters, newest first
    POST /api/v1/dlq/{partition}:{id}/replay                    put one back where it came from
    POST /api/v1/threads/{id}/deliveries/{outbound_id}/retry    re-queue a failed delivery
    GET  /api/v1/dashboard/sessions                             the live dashboard sessions
    DELETE /api/v1/dashboard/sessions                           end them all (gateway.web.dashboard.sessions)

The work is done in gateway.store.deadletters, shared with the CLI and the dashboard: an action on a
thread is recorded on it as a `note` naming who did it, before the entry goes back; the
outcome (a `sent` delivery, the replayed step) follows, and a delivery that now succeeds
takes the thread out of `failed`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from gateway.errors import NotFound
from gateway.runtime import Runtime
from gateway.store.deadletters import DeadLetter, DeadLetters
from gateway.web.api import Caller, runtime
from gateway.web.dashboard.sessions import DashboardSessions

router = APIRouter(prefix="/api/v1", tags=["ops"])


async def retry_delivery(rt: Runtime, thread_id: str, outbound_id: str, by: str) -> DeadLetter:
    """Re-queue the dead-lettered message `outbound_id` of a thread; NotFound if there is none."""
    if not await rt.store.exists(thread_id):
        raise NotFound("no such thread")
    dlq = DeadLetters.of(rt)
    dead = await dlq.find_for_thread(thread_id, lambda d: d.kind == "outbound" and d.outbound_id == outbound_id)
    if dead is None or not await dlq.replay(dead, by):
        raise NotFound(f"delivery {outbound_id} is not in the dead-letter stream (already retried?)")
    return dead


# ---------------------------------------------------------------- routes


@router.get("/dlq")
async def list_dead_letters(
    request: Request, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return {"dead_letters": [d.public() for d in await DeadLetters.of(runtime(request)).newest(limit)]}


@router.post("/dlq/{ref}/replay", status_code=202)
async def replay_dead_letter(ref: str, request: Request, caller: Caller) -> dict[str, Any]:
    dlq = DeadLetters.of(runtime(request))
    dead = await dlq.get(ref)
    if dead is None or not await dlq.replay(dead, caller):
        raise NotFound("no such dead letter")
    return {"replayed": dead.ref, "thread_id": dead.thread_id}


@router.post("/threads/{thread_id}/deliveries/{outbound_id}/retry", status_code=202)
async def retry(thread_id: str, outbound_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    dead = await retry_delivery(runtime(request), thread_id, outbound_id, caller)
    return {"retried": outbound_id, "dead_letter": dead.ref}


@router.get("/dashboard/sessions")
async def dashboard_sessions(request: Request, caller: Caller) -> dict[str, Any]:
    """The live dashboard sessions, newest first (a digest of each id, never the id)."""
    rt = runtime(request)
    return {"sessions": [s.public() for s in await DashboardSessions(rt.redis, rt.keys).active()]}


@router.delete("/dashboard/sessions")
async def end_dashboard_sessions(request: Request, caller: Caller) -> dict[str, int]:
    """End every dashboard session: each viewer logs in again with the token."""
    rt = runtime(request)
    return {"ended": await DashboardSessions(rt.redis, rt.keys).end_all()}
