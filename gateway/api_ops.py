"""Operations on what went wrong, for scripts and the dashboard alike.

    GET  /api/v1/dlq                                            dead letters, newest first
    POST /api/v1/dlq/{partition}:{id}/replay                    put one back where it came from
    POST /api/v1/threads/{id}/deliveries/{outbound_id}/retry    re-queue a failed delivery

An action on a thread is recorded on it as a `note` naming who did it. The note is
queued on the thread's inbound stream before the entry goes back, so the thread's
single writer appends it first; the outcome (a `sent` delivery, the replayed step)
follows, and a delivery that now succeeds takes the thread out of `failed`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query, Request
from redis.exceptions import ResponseError

from gateway.api import Caller, runtime
from gateway.entries import Entry
from gateway.errors import Malformed
from gateway.events import Note
from gateway.runtime import Runtime
from gateway.streams import StreamRows

router = APIRouter(prefix="/api/v1", tags=["ops"])
_SCAN_CHUNK = 200


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead-letter stream, with what it was about."""

    partition: int
    entry_id: str
    source: str  # the stream it came from: "inbound" or "outbox"
    source_id: str
    reason: str
    failed_at: float
    thread_id: str | None
    kind: str  # the entry kind, or "outbound" for a message that could not be delivered
    outbound_id: str | None = None

    @property
    def ref(self) -> str:
        """What `dlq replay` and the replay route take."""
        return f"{self.partition}:{self.entry_id}"

    def public(self) -> dict[str, Any]:
        return {
            "id": self.ref,
            "source": self.source,
            "source_id": self.source_id,
            "reason": self.reason,
            "failed_at": self.failed_at,
            "thread_id": self.thread_id,
            "kind": self.kind,
            "outbound_id": self.outbound_id,
        }


def to_dead_letter(p: int, entry_id: str, fields: dict[str, str]) -> DeadLetter:
    thread_id, kind, outbound_id = fields.get("t"), fields.get("k", "?"), None
    if "m" in fields:  # an outbound message the sender gave up on
        kind = "outbound"
        try:
            message = json.loads(fields["m"])
            thread_id, outbound_id = message.get("thread_id"), message.get("id")
        except (ValueError, AttributeError):
            pass
    try:
        failed_at = float(fields.get("failed_at", 0))
    except ValueError:
        failed_at = 0.0
    return DeadLetter(
        partition=p,
        entry_id=entry_id,
        source=fields.get("source", "").rsplit(":", 1)[-1],
        source_id=fields.get("source_id", ""),
        reason=fields.get("reason", ""),
        failed_at=failed_at,
        thread_id=thread_id or None,
        kind=kind,
        outbound_id=outbound_id,
    )


def _stream_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def dead_letters(rt: Runtime, limit: int = 100) -> list[DeadLetter]:
    """The newest `limit` dead letters across partitions."""
    found: list[DeadLetter] = []
    for p in range(rt.keys.partitions):
        for entry_id, fields in cast(StreamRows, await rt.redis.xrevrange(rt.keys.dlq(p), count=limit)):
            found.append(to_dead_letter(p, entry_id, fields))
    found.sort(key=lambda d: _stream_order(d.entry_id), reverse=True)
    return found[:limit]


async def dead_letter(rt: Runtime, ref: str) -> DeadLetter | None:
    """The dead letter named `partition:entry-id`, or None."""
    p, _, entry_id = ref.partition(":")
    if not p.isdigit() or int(p) >= rt.keys.partitions or not entry_id:
        raise Malformed(f"{ref!r} is not a dead letter id (partition:entry-id)")
    try:
        rows = cast(StreamRows, await rt.redis.xrange(rt.keys.dlq(int(p)), entry_id, entry_id))
    except ResponseError:  # Redis refuses an ill-formed stream id
        raise Malformed(f"{entry_id!r} is not a stream entry id") from None
    return to_dead_letter(int(p), rows[0][0], rows[0][1]) if rows else None


async def find_for_thread(rt: Runtime, thread_id: str, match: Callable[[DeadLetter], bool]) -> DeadLetter | None:
    """The newest dead letter of a thread's partition that `match` accepts (a scan: the stream stays short)."""
    p = rt.keys.thread_partition(thread_id)
    top = "+"
    while True:
        rows = cast(StreamRows, await rt.redis.xrevrange(rt.keys.dlq(p), max=top, count=_SCAN_CHUNK))
        for entry_id, fields in rows:
            dead = to_dead_letter(p, entry_id, fields)
            if dead.thread_id == thread_id and match(dead):
                return dead
        if len(rows) < _SCAN_CHUNK:
            return None
        top = f"({rows[-1][0]}"


async def replay(rt: Runtime, dead: DeadLetter, by: str) -> bool:
    """Put `dead` back on its stream, noting on its thread who did it; False if it is gone."""
    if dead.thread_id and await rt.store.exists(dead.thread_id):
        if dead.kind == "outbound":
            note = Note(kind="delivery_retry", text=f"delivery {dead.outbound_id} queued again", sender=by)
        else:
            note = Note(kind="replay", text=f"dead-lettered {dead.kind} entry {dead.source_id} replayed", sender=by)
        data = note.model_dump(mode="json", exclude_none=True)
        await rt.ingest.enqueue(Entry(kind="note", thread_id=dead.thread_id, data=data))
    return await rt.streams.replay(dead.partition, dead.entry_id)


async def retry_delivery(rt: Runtime, thread_id: str, outbound_id: str, by: str) -> DeadLetter:
    """Re-queue the dead-lettered message `outbound_id` of a thread; 404 if there is none."""
    if not await rt.store.exists(thread_id):
        raise HTTPException(404, "no such thread")
    dead = await find_for_thread(rt, thread_id, lambda d: d.kind == "outbound" and d.outbound_id == outbound_id)
    if dead is None or not await replay(rt, dead, by):
        raise HTTPException(404, f"delivery {outbound_id} is not in the dead-letter stream (already retried?)")
    return dead


# ---------------------------------------------------------------- routes


@router.get("/dlq")
async def list_dead_letters(
    request: Request, caller: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    return {"dead_letters": [d.public() for d in await dead_letters(runtime(request), limit)]}


@router.post("/dlq/{ref}/replay", status_code=202)
async def replay_dead_letter(ref: str, request: Request, caller: Caller) -> dict[str, Any]:
    rt = runtime(request)
    dead = await dead_letter(rt, ref)
    if dead is None or not await replay(rt, dead, caller):
        raise HTTPException(404, "no such dead letter")
    return {"replayed": dead.ref, "thread_id": dead.thread_id}


@router.post("/threads/{thread_id}/deliveries/{outbound_id}/retry", status_code=202)
async def retry(thread_id: str, outbound_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    dead = await retry_delivery(runtime(request), thread_id, outbound_id, caller)
    return {"retried": outbound_id, "dead_letter": dead.ref}
