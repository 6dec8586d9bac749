"""HumanLayer API load: `concurrency` callers, each creating a function call and reading it back, over and over.

The SDK's shape: `POST /humanlayer/v1/function_calls` with {run_id, call_id, spec: {fn, kwargs}},
then `GET /humanlayer/v1/function_calls/{call_id}` (the poll). Each pair has a call id of its own.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx


async def _run(url: str, seconds: float, concurrency: int, tag: str) -> dict:
    took: list[float] = []
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def caller(c: int) -> None:
            i = 0
            while time.monotonic() < end:
                call_id = f"{tag}-{c}-{i}"
                i += 1
                body = {"run_id": "bench", "call_id": call_id, "spec": {"fn": "refund", "kwargs": {"order": 1234}}}
                t0 = time.perf_counter()
                (await client.post("/humanlayer/v1/function_calls", json=body)).raise_for_status()
                (await client.get(f"/humanlayer/v1/function_calls/{call_id}")).raise_for_status()
                took.append(time.perf_counter() - t0)

        started = time.monotonic()
        await asyncio.gather(*(caller(c) for c in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"pairs": len(took), "rate": len(took) / elapsed, "p50_ms": statistics.median(took) * 1000}


def run(url: str, *, seconds: float, concurrency: int = 10, tag: str) -> dict:
    return asyncio.run(_run(url, seconds, concurrency, tag))
