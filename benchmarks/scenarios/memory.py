"""Scenario 7 (first half): what a stored thread of 20 events costs in Redis.

Threads are made the real way — an inbound message, nine tool turns and a final
answer through the worker and the `openai:` client (1 + 9 × 2 + 1 = 20 events) —
then measured two ways: MEMORY USAGE of each thread's own keys (its hash and its
event list), and Redis's used_memory growth divided by the threads, which also
counts what the run left around them (dedupe and conversation keys, index
entries, stream entries until they are trimmed, the queued outbound message).
"""

from __future__ import annotations

import asyncio
import time

import redis

from benchmarks.harness import PREFIX, Bench
from benchmarks.procs import flush, redis_server
from benchmarks.scenarios.steps import preload_frontdesk, worker_proc
from gateway.store.keys import Keys


def measure(bench: Bench, threads: int = 1000) -> dict:
    with redis_server(bench.dir, appendonly=False, name="redis-memory") as (rurl, _):
        client = redis.Redis.from_url(rurl, decode_responses=True)
        try:
            flush(rurl)
            before = client.info("memory")["used_memory"]
            bench.control(delay=0.0, turns=9)
            asyncio.run(preload_frontdesk(rurl, f"{bench.fakes_url}/callback", threads, "m"))
            worker = worker_proc(bench, rurl, "worker-memory")
            try:
                deadline = time.monotonic() + 120
                while bench.stats()["requests"] < threads * 10 and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)  # the last saves
            finally:
                worker.stop()
            keys = Keys(PREFIX, 1)
            ids = [tid for tid in client.zrange(keys.index(0), 0, -1)]
            lengths = [client.llen(keys.events(tid)) for tid in ids[:50]]
            own = sum(
                (client.memory_usage(keys.thread(t), samples=0) or 0)
                + (client.memory_usage(keys.events(t), samples=0) or 0)
                for t in ids
            )
            after = client.info("memory")["used_memory"]
            return {
                "threads": len(ids),
                "events": sorted(set(lengths)),
                "own_bytes": own / max(len(ids), 1),
                "all_bytes": (after - before) / max(len(ids), 1),
            }
        finally:
            client.close()
