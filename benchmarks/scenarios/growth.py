"""Scenario 8: how cost grows — with a thread's length, with the threads stored, with partitions.

- Thread length: `threads` threads of 10, 100 and 1,000 events (a message, then `add`
  tool calls and their results) stored by ThreadStore.create, which queues each one's
  next step; the fake model answers `add` for ever, so every step is a step on a thread
  of about that length, rendered with the default context budget (FRONTDESK_CONTEXT_BUDGET,
  24,000 tokens: the 1,000-event threads are compacted, the others fit).
- Stored threads: 1 k, 100 k and 1 M threads at rest (benchmarks.populate), added to the
  same Redis in turn; at each size webhook ingest (wrk, as scenario 1) and the thread
  listing, the dashboard's page (`GET /`) and the API's (`GET /api/v1/threads`), fetched one
  at a time.
- Partitions: scenario 3's steps on a Redis Cluster on loopback of 1 and then 3 masters,
  FRONTDESK_PARTITIONS=3 on both.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis

from benchmarks import populate
from benchmarks.harness import PREFIX, PUBLIC_URL, Bench
from benchmarks.loadgen.wrk import AGENT, run_wrk, write_requests
from benchmarks.procs import Proc, flush, flush_nodes, redis_cluster, redis_server
from benchmarks.scenarios.http_ingest import _one
from benchmarks.scenarios.steps import FRONTDESK, preload_frontdesk, window
from gateway.events import Contact, ToolCall, ToolResult, UserMessage
from gateway.events import Thread as StoredThread
from gateway.store.keys import Keys
from gateway.store.threads import ThreadStore

LENGTHS = (10, 100, 1000)
SIZES = (1_000, 100_000, 1_000_000)
FOREVER = 10**9  # the fake model's `turns`: it never says done_for_now


def _worker(bench: Bench, url: str, name: str, **settings: object) -> Proc:
    """`frontdesk worker --no-outbox` on `url`, with `settings` added to its environment."""
    env = bench.env(url, FRONTDESK_SHUTDOWN_GRACE=1, **settings)
    return Proc([FRONTDESK, "worker", "--no-outbox"], env=env, logdir=bench.dir, name=name)


# ---------------------------------------------------------------- thread length


def _long_thread(i: int, events: int) -> StoredThread:
    # Messages first (two when `events` is even), so the thread ends with a tool result: the model's turn.
    made: list = [UserMessage(text="Add 1 and 2, again and again.", channel="webhook")] * (2 - events % 2)
    n = 0
    while len(made) < events:
        if n and n % 10 == 0 and len(made) + 3 <= events:  # the person speaks every 10 tool turns
            made.append(UserMessage(text="And again.", channel="webhook"))
        made += [
            ToolCall(call_id=f"c{n}", tool="add", arguments={"intent": "add", "a": n, "b": 2}),
            ToolResult(call_id=f"c{n}", result=n + 2),
        ]
        n += 1
    return StoredThread(
        id=Keys(PREFIX, 1).new_thread_id(),
        agent=AGENT,
        origin=Contact(channel="webhook", address=f"https://caller{i}.bench.example/hook"),
        events=made,
    )


async def _store_long(url: str, threads: int, events: int) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        store = ThreadStore(client, Keys(PREFIX, 1))
        for start in range(0, threads, 50):
            await asyncio.gather(
                *(store.create(_long_thread(i, events)) for i in range(start, min(threads, start + 50)))
            )
    finally:
        await client.aclose()


def length_curve(bench: Bench, threads: int = 300, profile_to: Path | None = None) -> dict[int, list[dict]]:
    """{events: [run...]}: steps per second and worker CPU per step on threads of each length (the longest profiled last)."""
    runs: dict[int, list[dict]] = {n: [] for n in LENGTHS}
    with redis_server(bench.dir, appendonly=True, name="redis-length") as (rurl, _):
        for i in range(bench.options.runs):
            for n in LENGTHS:
                flush(rurl)
                bench.control(delay=0.0, turns=FOREVER)
                asyncio.run(_store_long(rurl, threads, n))
                # A thread steps for ever here: the runaway guard (25 steps since the person spoke) is lifted.
                worker = _worker(bench, rurl, f"worker-len{n}-{i}", FRONTDESK_MAX_STEPS=FOREVER)
                try:
                    # Measured once the model has had as many calls as there are threads (all start at
                    # once, so about each thread's first step): that step reads and renders the whole
                    # thread (the cost of a worker taking a thread up; NOTES.md, "Thread length"), each
                    # one after it only what the step added.
                    runs[n].append(
                        window(
                            bench, [worker], warm=1.0, seconds=bench.options.duration, after_calls=threads, timeout=120
                        )
                    )
                    if profile_to is not None and i == bench.options.runs - 1 and n == LENGTHS[-1]:
                        # Apart from the measured window: py-spy's sampling slows this worker several-fold.
                        window(bench, [worker], warm=0.0, seconds=3.0, profile_to=profile_to)
                finally:
                    worker.stop()
    return runs


# ---------------------------------------------------------------- stored threads


def _listing(url: str, path: str, seconds: float) -> dict:
    """Fetch `path` one request at a time for `seconds`: requests per second and the median latency."""
    took: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get(path).raise_for_status()  # warm
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            client.get(path).raise_for_status()
            took.append(time.perf_counter() - t0)
    return {"rps": len(took) / sum(took), "p50_ms": statistics.median(took) * 1000, "requests": len(took)}


def stored_curve(bench: Bench, sizes: tuple[int, ...] = SIZES) -> dict[int, dict]:
    """{threads stored: {"ingest": [run...], "page": [...], "api": [...], "bytes": per thread, "fill_s": seconds}}."""
    o = bench.options
    keys = Keys(PREFIX, 1)
    out: dict[int, dict] = {}
    # No AOF: the curve is about the number of threads, and 1 M threads' AOF would be gigabytes of disk.
    with redis_server(bench.dir, appendonly=False, name="redis-stored") as (rurl, rproc):
        populate.check(rurl, keys, AGENT)
        flush(rurl)
        base = populate.used_memory(rurl)
        with bench.http_server("frontdesk", bench.env(rurl), "frontdesk-http-stored") as (url, proc):
            have = 0
            for size in sizes:
                t0 = time.monotonic()
                populate.populate(rurl, keys, AGENT, have, size)
                fill = time.monotonic() - t0
                per_thread = (populate.used_memory(rurl) - base) / size
                have = size
                result: dict = {"ingest": [], "page": [], "api": [], "bytes": per_thread, "fill_s": fill}
                for i in range(o.runs):
                    file = bench.dir / f"stored-{size}-{i}.tsv"
                    probe = bench.dir / "stored-probe.tsv"
                    write_requests(probe, "webhook", 5_000, bench.keys, PUBLIC_URL, f"sp{size}{i}")
                    rate = run_wrk(url, probe, duration=1, connections=o.connections)["rps"]
                    write_requests(
                        file, "webhook", int(rate * o.duration * 2) + 5000, bench.keys, PUBLIC_URL, f"s{size}{i}"
                    )
                    result["ingest"].append(_one(url, file, proc, rproc, o.duration, o.connections))
                    result["page"].append(_listing(url, "/", o.duration / 2))
                    result["api"].append(_listing(url, "/api/v1/threads?limit=50", o.duration / 2))
                    _trim(rurl, keys)
                out[size] = result
    return out


def _trim(url: str, keys: Keys) -> None:
    """Drop what ingest queued (the inbound stream, dedupe and conversation keys stay small), keeping the threads."""
    client = redis.Redis.from_url(url)
    try:
        client.delete(keys.inbound(0))
    finally:
        client.close()


# ---------------------------------------------------------------- partitions


def cluster_curve(bench: Bench, *, threads: int = 6000, turns: int = 4, partitions: int = 3) -> dict[int, list[dict]]:
    """{masters: [run...]}: one worker's steps per second on clusters of 1 and 3 masters, runs alternating."""
    runs: dict[int, list[dict]] = {1: [], 3: []}
    with (
        redis_cluster(bench.dir, masters=1, name="cluster1") as one,
        redis_cluster(bench.dir, masters=3, name="cluster3") as three,
    ):
        clusters = {1: one, 3: three}
        for i in range(bench.options.runs):
            for masters, (url, ports) in clusters.items():
                flush_nodes(ports)
                bench.control(delay=0.0, turns=turns)
                asyncio.run(
                    preload_frontdesk(url, f"{bench.fakes_url}/callback", threads, f"c{masters}{i}", partitions)
                )
                worker = _worker(bench, url, f"worker-cluster{masters}-{i}", FRONTDESK_PARTITIONS=partitions)
                try:
                    run = window(bench, [worker], warm=1.0, seconds=bench.options.duration)
                    run["exhausted"] = run["total"] >= threads * (turns + 1)
                    runs[masters].append(run)
                finally:
                    worker.stop()
    return runs
