"""Cron triggers: schedules in frontdesk.toml launch threads (factor 11).

Every worker process runs the scheduler; each tick still starts exactly one
thread, because the thread id is derived from the schedule and the tick, and
creating a thread that exists already does nothing (one atomic script).

Missed ticks (no scheduler was running): when a scheduler starts, the latest
tick of the last FRONTDESK_CRON_GRACE seconds (default 300) fires once; older
ones are skipped and logged. Several ticks missed while running (a long pause)
likewise coalesce into the latest one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING

import structlog
from croniter import croniter

from gateway.config import CronConfig, parse_identity
from gateway.errors import ConfigError, Unavailable
from gateway.launch import launch_thread, unreachable
from gateway.loops import redis_down, sleep

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = structlog.get_logger("frontdesk.cron")


def job_name(job: CronConfig, index: int) -> str:
    return job.name or f"cron{index}"


def due_tick(schedule: str, after: float, now: float) -> tuple[float | None, int]:
    """The latest tick in (after, now], and how many earlier ones it stands for."""
    it = croniter(schedule, after)
    latest, skipped = None, -1
    while True:
        tick = it.get_next(float)
        if tick > now:
            return latest, max(skipped, 0)
        latest, skipped = tick, skipped + 1


def tick_thread_id(rt: Runtime, name: str, tick: float) -> str:
    digest = hashlib.sha256(f"{rt.settings.key_prefix}/{name}/{tick:.0f}".encode()).hexdigest()[:22]
    return f"th_cron_{digest}"


class Cron:
    """Fires the configured schedules; safe to run in every replica."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.jobs = [(job_name(job, i), job) for i, job in enumerate(runtime.config.cron)]
        for i, (_, job) in enumerate(self.jobs):
            if not croniter.is_valid(job.schedule):
                raise ConfigError(f"frontdesk.toml: cron.{i}.schedule: {job.schedule!r} is not a cron expression")
            # Refused now, at start-up, rather than by every tick's launch.
            reason = unreachable(runtime, job.agent, parse_identity(job.contact)) if job.contact else None
            if reason:
                raise ConfigError(f"frontdesk.toml: cron.{i}.contact: {reason}")
        self.fired = 0  # threads this scheduler started (the others' ticks were taken)

    async def run(self, stop: asyncio.Event) -> None:
        if not self.jobs:
            return
        last = {name: time.time() - self.rt.settings.cron_grace for name, _ in self.jobs}
        while not stop.is_set():
            now = time.time()
            for name, job in self.jobs:
                tick, skipped = due_tick(job.schedule, last[name], now)
                if tick is None:
                    continue
                if skipped:
                    log.warning("cron ticks skipped; firing the latest only", job=name, skipped=skipped)
                try:
                    await self.fire(name, job, tick)
                    last[name] = tick
                except Unavailable as exc:
                    await redis_down(stop, exc)
            await sleep(stop, self._until_next(last))

    def _until_next(self, last: dict[str, float]) -> float:
        nxt = min(croniter(job.schedule, last[name]).get_next(float) for name, job in self.jobs)
        return min(max(nxt - time.time(), 0.05), 1.0)

    async def fire(self, name: str, job: CronConfig, tick: float) -> bool:
        """Start the tick's thread; False if another scheduler already did."""
        contact = parse_identity(job.contact) if job.contact else None
        thread = await launch_thread(
            self.rt,
            job.agent,
            job.text,
            contact,
            channel="cron",
            by=name,
            thread_id=tick_thread_id(self.rt, name, tick),
        )
        if thread is not None:
            self.fired += 1
            log.info("cron fired", job=name, tick=tick, thread_id=thread.id)
        return thread is not None
