"""Test helpers: polling for a condition, running loops in the background, free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
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
    from gateway.store.entries import Entry

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


def free_port(*, bus: bool = False) -> int:
    """A loopback port free right now, for a server a test starts.

    With `bus`, one whose Redis Cluster bus port (+10000) is free too: Redis 6 has no
    cluster-port setting. Those are picked below the kernel's ephemeral range (32768 up
    on Linux), where the port 0 answers come from, so a pair fits under 65536.
    """
    if not bus:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(500):
        port = random.randint(20000, 40000)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair on loopback")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
