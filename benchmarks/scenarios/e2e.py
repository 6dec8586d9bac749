"""Scenario 5: end to end at a steady rate, inbound request to delivered reply.

frontdesk runs as two processes, as deployed: the HTTP app, and `frontdesk worker`
(worker and outbox sender). The model answers `done_for_now` at once. Latency is
from just before the signed request is sent to the moment the reply reaches the
fakes process: the webhook callback (matched by thread id) or Slack's
`chat.postMessage` in the thread (matched by thread_ts). Both ends read
`time.monotonic()`, one clock for every process on Linux.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from benchmarks.harness import PUBLIC_URL, Bench
from benchmarks.loadgen.wrk import write_requests
from benchmarks.procs import PYTHON, Proc, redis_server

FRONTDESK = str(Path(PYTHON).with_name("frontdesk"))


async def _send(url: str, lines: list[list[str]], rate: float) -> dict[str, float]:
    """Send each request at its slot of a fixed schedule; {match key: send time}."""
    sent: dict[str, float] = {}
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=200)) as client:

        async def one(i: int, parts: list[str]) -> None:
            at = time.monotonic()
            response = await client.post(
                parts[0], content=parts[1], headers=dict(zip(parts[2::2], parts[3::2], strict=False))
            )
            if response.status_code >= 300:
                failures.append(f"{response.status_code} {response.text[:200]}")
                return
            key = response.json()["thread_id"] if parts[0].startswith("/webhooks/") else _slack_ts(parts[1])
            sent[key] = at

        start = time.monotonic()
        tasks = []
        for i, parts in enumerate(lines):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, parts)))
        await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return sent


def _slack_ts(body: str) -> str:
    import json

    return json.loads(body)["event"]["ts"]


def _latencies(bench: Bench, kind: str, sent: dict[str, float], timeout: float = 30) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        got = {key: at for k, key, at in bench.arrivals() if k == kind and key in sent}
        if len(got) >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if len(got) < len(sent):
        raise RuntimeError(f"{kind}: {len(sent) - len(got)} of {len(sent)} replies never arrived")
    return sorted((got[key] - sent[key]) * 1000 for key in sent)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def measure(
    bench: Bench,
    rate: float = 50.0,
    kinds: tuple[str, ...] = ("webhook", "slack"),
    runs: int | None = None,
    tag: str = "",
    **settings: object,
) -> dict[str, list[dict]]:
    """`runs` measured rounds (default: the options') of each of `kinds`; `settings`: extra environment."""
    o = bench.options
    out: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with redis_server(bench.dir, appendonly=True, name=f"redis-e2e{tag}") as (rurl, _):
        env = bench.env(rurl, FRONTDESK_SLACK_ACK_REACTION="eyes", FRONTDESK_SHUTDOWN_GRACE=1, **settings)
        with bench.http_server("frontdesk", env, f"frontdesk-http-e2e{tag}") as (url, _):
            worker = Proc([FRONTDESK, "worker"], env=env, logdir=bench.dir, name=f"worker-e2e{tag}")
            try:
                bench.control(delay=0.0, turns=0)
                n = int(rate * o.duration)
                for i in range((o.runs if runs is None else runs) + 1):  # the first round warms up
                    for kind in out:
                        # No FLUSHALL here: it would take the consumer group from under the running worker.
                        bench.control(delay=0.0, turns=0)
                        file = bench.dir / f"e2e-{kind}.tsv"
                        callback = f"{bench.fakes_url}/callback?c={{i}}&r={i}"
                        write_requests(
                            file,
                            kind,
                            n if i else int(rate * 2),
                            bench.keys,
                            PUBLIC_URL,
                            f"e{i}{int(time.time())}",
                            callback=callback,
                        )
                        lines = [line.split("\t") for line in file.read_text().splitlines()]
                        sent = asyncio.run(_send(url, lines, rate))
                        lat = _latencies(bench, kind, sent)
                        if i:
                            time.sleep(0.5)  # a status cleared after the reply is still counted
                            calls = bench.stats()["slack_methods"]
                            out[kind].append(
                                {
                                    "n": len(lat),
                                    "p50": pct(lat, 50),
                                    "p99": pct(lat, 99),
                                    "max": lat[-1],
                                    "slack_calls": sum(calls.values()) / len(lat),
                                    "slack_methods": calls,
                                }
                            )
            finally:
                worker.stop()
    return out
