"""Helpers for the long-running loops of workers and senders."""

from __future__ import annotations

import asyncio
import time

import structlog

from gateway import metrics

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


ERROR_LOG_EVERY = 60.0  # seconds: a bug that recurs every round is logged once a minute, counted every time
_logged: dict[str, tuple[float, int]] = {}  # loop -> (when last logged, failures since)


def loop_failed(loop: str, **context: object) -> None:
    """In an `except` block: log the error at error level with its traceback, rate-limited per loop, and count it.

    For what a loop survives but should not meet: not an outage (Unavailable), which
    is expected and waited out, but a bug, which must reach a person.
    """
    metrics.LOOP_ERRORS.labels(loop).inc()
    now = time.monotonic()
    last, unlogged = _logged.get(loop, (float("-inf"), 0))
    if now - last < ERROR_LOG_EVERY:
        _logged[loop] = (last, unlogged + 1)
        return
    _logged[loop] = (now, 0)
    log.exception("loop failed; carrying on", loop=loop, unlogged_before=unlogged, **context)
