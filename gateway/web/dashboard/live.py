"""Live thread pages: Server-Sent Events fed by polling the thread's event list.

Each open page polls LLEN of its thread's events every POLL seconds and reads
only what is new (LRANGE from the last index it sent). Every replica reads the
same list, so a page sees what any worker appended, whichever replica serves it.
A comment line every HEARTBEAT seconds keeps proxies from closing an idle stream.

A stream ends when the browser goes (Starlette cancels it), when `close_streams`
is called as the server stops, or after LIFETIME seconds: the browser then
reconnects by itself with Last-Event-ID (the event count it has) and misses
nothing. The lifetime bounds how long a server that was not told can wait on an
open stream at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from gateway.errors import Unavailable
from gateway.events import EventAdapter, Thread
from gateway.runtime import Runtime
from gateway.store.threads import thread_from_stored

POLL = 0.5
HEARTBEAT = 15.0
LIFETIME = 60.0


def closing(app: FastAPI) -> asyncio.Event:
    event = getattr(app.state, "dashboard_closing", None)
    if event is None:
        event = app.state.dashboard_closing = asyncio.Event()
    return event


def close_streams(app: FastAPI) -> None:
    """End every open live stream of `app` now (call it when the server starts to stop)."""
    closing(app).set()


async def thread_events(
    app: FastAPI, rt: Runtime, thread_id: str, after: int, render: Callable[[Thread, int], dict[str, Any]]
) -> AsyncIterator[str]:
    """SSE lines: an `update` each time the thread has events beyond `after`, rendered by `render(thread, start)`."""
    stop = closing(app)
    loop = asyncio.get_running_loop()
    started = beat = loop.time()
    yield "retry: 1000\n\n"
    async with rt.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(rt.keys.thread(thread_id))
        pipe.lrange(rt.keys.events(thread_id), 0, -1)
        meta, raw = await pipe.execute()
    if not meta:
        yield "event: gone\ndata: {}\n\n"
        return
    thread = thread_from_stored(meta, raw)
    seen = min(after, len(thread.events))
    while not stop.is_set() and loop.time() - started < LIFETIME:
        if len(thread.events) > seen:
            update = render(thread, seen)
            seen = len(thread.events)
            yield f"id: {seen}\nevent: update\ndata: {json.dumps(update)}\n\n"
            beat = loop.time()
        elif loop.time() - beat >= HEARTBEAT:
            yield ": keep-alive\n\n"
            beat = loop.time()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL)
        try:
            grown = await rt.redis.llen(rt.keys.events(thread_id)) > len(thread.events)
            fresh = await rt.redis.lrange(rt.keys.events(thread_id), len(thread.events), -1) if grown else []
        except Unavailable:
            return  # the browser reconnects (retry) and resumes from Last-Event-ID
        if fresh:
            events = [*thread.events, *(EventAdapter.validate_json(e) for e in fresh)]
            thread = thread.model_copy(update={"events": events, "updated_at": max(thread.updated_at, events[-1].at)})
