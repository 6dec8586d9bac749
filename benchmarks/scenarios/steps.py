"""Scenarios 3, 4 and 6: agent steps per second, threads waiting on a slow model, and scaling.

Work is queued before the worker starts: one inbound message per thread, for the
`calculator` sample agent with the `openai:` client. The fake model answers the
`add` tool until the context holds `turns` tool results, then `done_for_now`, so a
thread takes `turns + 1` steps; every step loads the thread, renders the prompt
and context, calls the model over HTTP, validates the call, saves, and queues the
next turn (or the outbound message). Steps are counted at the model: requests
answered in a window that starts once the worker is up and warm.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis

from benchmarks import profile
from benchmarks.harness import PREFIX, Bench
from benchmarks.procs import PYTHON, Proc, child_env, flush, wait_until
from gateway.events import InboundMessage
from gateway.store.connection import make_client
from gateway.store.ingest import Ingest
from gateway.store.keys import Keys

FRONTDESK = str(Path(PYTHON).with_name("frontdesk"))


async def preload_frontdesk(url: str, callback: str, n: int, tag: str, partitions: int = 1) -> None:
    """`n` inbound messages accepted by Ingest, each a thread of its own; `url` may name a Cluster."""
    client = make_client(url)
    try:
        ingest = Ingest(client, Keys(PREFIX, partitions), 3600)
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                message = InboundMessage(
                    id=f"pre-{tag}-{i}",
                    channel="webhook",
                    conversation=f"calculator/{tag}-{i}",
                    sender=f"{callback}?c={tag}-{i}",
                    text="What is 1 plus 2?",
                    address="calculator",
                    reply_to={"callback_url": f"{callback}?c={tag}-{i}"},
                )
                await ingest.accept(message, "calculator")

        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.aclose()


def preload_floor(url: str, n: int) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.xgroup_create("floor:inbound", "floor", id="0", mkstream=True)
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + 1000)):
                pipe.xadd("floor:inbound", {"t": f"t{i}"})
            pipe.execute()
    finally:
        client.close()


def window(
    bench: Bench,
    procs: list[Proc],
    *,
    warm: float,
    seconds: float,
    timeout: float = 60,
    profile_to: Path | None = None,
    after_calls: int = 1,
) -> dict:
    """Wait for `after_calls` model calls, let `warm` seconds pass, then count model calls for `seconds` (profiling the first process)."""
    deadline = time.monotonic() + timeout
    while bench.stats()["requests"] < after_calls:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no model call within {timeout:g} s:\n" + "\n".join(p.tail() for p in procs))
        time.sleep(0.05)
    time.sleep(warm)
    spy = profile.start(procs[0].pid, profile_to, seconds) if profile_to is not None else None
    s0, cpu0 = bench.stats(), sum(p.cpu_seconds() for p in procs)
    time.sleep(seconds)
    s1, cpu1 = bench.stats(), sum(p.cpu_seconds() for p in procs)
    rss = [p.rss_bytes() for p in procs]
    if spy is not None:
        profile.stop(spy)
    steps = s1["requests"] - s0["requests"]
    elapsed = s1["at"] - s0["at"]
    return {
        "steps": steps,
        "rate": steps / elapsed,
        "in_flight": (s1["area"] - s0["area"]) / elapsed,
        "max_in_flight": s1["max_in_flight"],
        "cpu_us": (cpu1 - cpu0) / max(steps, 1) * 1e6,
        "cpu_share": (cpu1 - cpu0) / elapsed,
        "rss": rss,
        "total": s1["requests"],
    }


def run_frontdesk(
    bench: Bench,
    rurl: str,
    *,
    workers: int = 1,
    threads: int,
    turns: int,
    delay: float = 0.0,
    warm: float = 1.0,
    tag: str = "",
    profile_to: Path | None = None,
    **settings: object,
) -> dict:
    """`workers` worker processes (`frontdesk worker --no-outbox`) on `threads` queued threads; `settings`: extra environment."""
    flush(rurl)
    bench.control(delay=delay, turns=turns)
    asyncio.run(preload_frontdesk(rurl, f"{bench.fakes_url}/callback", threads, tag or "s"))
    env = bench.env(rurl, FRONTDESK_SHUTDOWN_GRACE=1, **settings)
    procs = [
        Proc([FRONTDESK, "worker", "--no-outbox"], env=env, logdir=bench.dir, name=f"worker{tag}-{i}")
        for i in range(workers)
    ]
    try:
        result = window(bench, procs, warm=warm, seconds=bench.options.duration, profile_to=profile_to)
        result["exhausted"] = result["total"] >= threads * (turns + 1)  # the backlog ran out inside the window
        return result
    finally:
        for p in procs:
            p.stop()


def worker_proc(bench: Bench, rurl: str, name: str) -> Proc:
    """One `frontdesk worker --no-outbox` on `rurl`, as the scenarios run it."""
    env = bench.env(rurl, FRONTDESK_SHUTDOWN_GRACE=1)
    return Proc([FRONTDESK, "worker", "--no-outbox"], env=env, logdir=bench.dir, name=name)


def idle_rss(bench: Bench, rurl: str) -> int:
    """A `frontdesk worker`'s RSS once it is up with nothing to do: what start-up alone costs (imports, clients)."""
    flush(rurl)
    proc = worker_proc(bench, rurl, "worker-idle")
    try:
        wait_until(lambda: '"starting"' in proc.tail(5), timeout=60, what="idle worker", proc=proc)
        time.sleep(1.0)  # its readers' first blocking reads
        return proc.rss_bytes()
    finally:
        proc.stop()


def run_floor(bench: Bench, rurl: str, *, threads: int, turns: int, warm: float = 1.0, concurrency: int = 64) -> dict:
    flush(rurl)
    bench.control(delay=0.0, turns=turns)
    preload_floor(rurl, threads)
    proc = Proc(
        [
            PYTHON,
            "-m",
            "benchmarks.floors.steps",
            "--redis",
            rurl,
            "--model",
            f"{bench.fakes_url}/v1/chat/completions",
            "--concurrency",
            str(concurrency),
        ],
        env=child_env(),
        logdir=bench.dir,
        name="floor-steps",
    )
    try:
        result = window(bench, [proc], warm=warm, seconds=bench.options.duration)
        result["exhausted"] = result["total"] >= threads * (turns + 1)
        return result
    finally:
        proc.stop()
