"""Test helpers: polling for a condition and running loops in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from gateway.settings import Settings


async def eventually(check, timeout: float = 15.0, interval: float = 0.05):
    """Poll `check` (sync or async) until it returns a truthy value; fail after `timeout`.

    The timeout only bounds a broken test: nothing here measures speed.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def background(*runners) -> AsyncIterator[asyncio.Event]:
    """Run `runner.run(stop)` for each runner until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def stream_entries(rt, kind: str | None = None) -> list:
    """Every entry on the runtime's inbound streams, oldest first per partition (of `kind`, if given)."""
    from gateway.entries import Entry

    found = []
    for p in range(rt.keys.partitions):
        for entry_id, fields in await rt.redis.xrange(rt.keys.inbound(p)):
            entry = Entry.from_fields(entry_id, fields)
            if kind is None or entry.kind == kind:
                found.append(entry)
    return found


def make_settings(redis_url: str, prefix: str, **overrides) -> Settings:
    values = dict(
        redis_url=redis_url,
        key_prefix=prefix,
        claim_timeout=1.0,
        retry_base=0.05,
        retry_max=0.2,
        shutdown_grace=5.0,
        model="demo",
        config_path=None,
        rate_limit=0,  # tests send many messages as one sender; tests/security sets the limit it tests
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


def plain_tracebacks() -> None:
    """Log tracebacks as plain text, the way a deployed process does (gateway/logs.py).

    structlog's default renders them with rich, every frame's locals included: on this
    2-core machine that held the event loop longer than the 333 ms lease the tests' 1 s
    claim timeout gives, so a step that raised lost its thread before it could be
    dead-lettered (tests/dashboard/test_dashboard_actions.py saw it every run).
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=True),
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ]
    )
