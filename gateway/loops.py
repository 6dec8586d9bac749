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


class Slots:
    """A cap on the work one process holds: a reader takes slots before it reads, one per entry it may start.

    An `asyncio.Semaphore` with two things it lacks: taking every free slot at once, and a
    wait that a shutdown (`stop`) ends.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._free = asyncio.Semaphore(size)

    async def take(self, stop: asyncio.Event, most: int) -> int:
        """Wait for a free slot, then take up to `most` of those free; 0 once `stop` is set."""
        if self._free.locked():
            acquiring = asyncio.ensure_future(self._free.acquire())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait((acquiring, stopping), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not acquiring.done():
                    acquiring.cancel()
            if acquiring.cancelled() or not acquiring.done():
                return 0
        elif stop.is_set():
            return 0
        else:
            await self._free.acquire()  # free: returns without waiting
        taken = 1
        while taken < most and not self._free.locked():
            await self._free.acquire()
            taken += 1
        self.in_use += taken
        return taken

    async def take_all(self, stop: asyncio.Event, n: int) -> int:
        """Take `n` slots, waiting as long as it takes; 0 (none kept) once `stop` is set."""
        taken = 0
        while taken < n:
            got = await self.take(stop, n - taken)
            if not got:
                self.give(taken)
                return 0
            taken += got
        return taken

    def give(self, n: int = 1) -> None:
        for _ in range(n):
            self._free.release()
        self.in_use -= n
