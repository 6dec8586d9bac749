"""SIGTERM under load: a worker finishes the steps in flight, stops, and loses nothing.

Extends tests/gateway/test_processes.py's SIGTERM test from three threads to many,
with the grace period long enough to run every thread to its end: a worker told to
stop must still stop after the step in flight (the thread's `continue` waits on
the stream for any worker), not run the rest of each thread inside the grace.
"""

from __future__ import annotations

import signal

import pytest
from helpers import eventually
from test_processes import Proc, check_delivered_once, delivered_all, progressed, said, sink, worker_env  # noqa: F401 - sink is a fixture

STEP = 0.2  # seconds per tool step (TEST_STEP_DELAY)


async def _saved(rt, ids: list[str]) -> dict[str, int]:
    """Tool steps saved per thread, read in one round trip (a user message, then two events a step)."""
    async with rt.redis.pipeline(transaction=False) as pipe:
        for tid in ids:
            pipe.hget(rt.keys.thread(tid), "events")
        counts = await pipe.execute()
    return {tid: (int(n or 1) - 1) // 2 for tid, n in zip(ids, counts, strict=False)}


async def _more(rt, ids: list[str], total: int) -> bool:
    return sum((await _saved(rt, ids)).values()) >= total


async def _stop(proc: Proc) -> None:
    proc.signal(signal.SIGTERM)
    assert await proc.exited() == 0, proc.output()
    assert "exiting at once" not in proc.output()


async def _sigterm_under_load(tmp_path, rt, settings, sink, *, threads: int, steps: int, rounds: int) -> None:
    recorder, url = sink
    env = worker_env(settings, url, TEST_STEP_DELAY=STEP, FRONTDESK_SHUTDOWN_GRACE=60)
    ids = [(await rt.ingest.accept(said(i, f"steps={steps}"), "steps")).thread_id for i in range(threads)]
    procs: list[Proc] = []
    try:
        # One worker with every thread in flight: told to stop, it saves the step each
        # thread is in (or the one finishing as the signal went) and no more; the bound
        # leaves one step of room for a loaded machine, where the rest would be ~steps.
        first = Proc(["worker"], env, tmp_path, "w0")
        procs.append(first)
        await eventually(lambda: progressed(rt, ids, 2), timeout=60)
        assert first.up()
        before = await _saved(rt, ids)
        await _stop(first)
        after = await _saved(rt, ids)
        assert "draining" in first.output()
        assert all(after[t] - before[t] <= 3 for t in ids), {t: (before[t], after[t]) for t in ids}
        assert any(after[t] < steps for t in ids)  # threads were left for the next workers

        # Two workers; one after the other is stopped while both are busy, and replaced.
        procs += [Proc(["worker"], env, tmp_path, f"w{i}") for i in (1, 2)]
        for round_ in range(rounds):
            await eventually(lambda: all(p.up() for p in procs[1:]), timeout=60)
            # Stop one while there is work left for both: at 2/5, then 3/5 (...) of all the steps.
            target = threads * steps * (round_ + 2) // (rounds + 3)
            await eventually(lambda: _more(rt, ids, target), timeout=60)
            victim = procs[1 + round_ % 2]
            await _stop(victim)
            procs[1 + round_ % 2] = Proc(["worker"], env, tmp_path, f"w{3 + round_}")
        await eventually(lambda: delivered_all(rt, ids), timeout=180, interval=0.2)
        # The last replacement may still be starting (on a loaded machine, seconds): a SIGTERM
        # before its handlers are in place ends it with the default action (-15), not a drain.
        await eventually(lambda: all(p.up() for p in procs[1:]), timeout=60)
        for proc in procs[1:]:
            await _stop(proc)
    finally:
        for proc in procs:
            proc.kill()
    await check_delivered_once(rt, recorder, ids, steps)


async def test_sigterm_under_load_stops_after_the_step_in_flight_and_loses_nothing(tmp_path, rt, settings, sink):
    await _sigterm_under_load(tmp_path, rt, settings, sink, threads=20, steps=20, rounds=1)


@pytest.mark.slow
async def test_chaos_sigterm_again_and_again_under_load(tmp_path, rt, settings, sink):
    await _sigterm_under_load(tmp_path, rt, settings, sink, threads=200, steps=30, rounds=8)
