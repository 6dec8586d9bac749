"""Helpers for the long-running loops of workers and senders."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger("frontdesk.loops")


async def sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def redis_down(stop: asyncio.Event, exc: BaseException, seconds: float = 1.0) -> None:
    """Log and wait before trying Redis again: no process exits because Redis went away."""
    log.warning("redis unavailable; retrying", error=str(exc) or type(exc).__name__)
    await sleep(stop, seconds)
