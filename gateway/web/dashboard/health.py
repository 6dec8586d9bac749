"""The numbers an operator looks at first: queues, lag, workers, dead letters, deliveries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

from redis.exceptions import ResponseError

from gateway.outbox import GROUP as SENDERS
from gateway.runtime import Runtime
from gateway.store import modelhealth
from gateway.store.modelhealth import ModelHealth
from gateway.store.threads import GROUP as WORKERS

STALE_WORKER = 30.0  # seconds without a heartbeat (they beat every 5 s)


@dataclass
class Group:
    name: str
    lag: int | None = None  # entries no consumer has read yet; None: the group does not exist yet
    pending: int = 0  # read, not yet acknowledged


@dataclass
class PartitionHealth:
    partition: int
    inbound: int
    outbox: int
    dlq: int
    groups: list[Group] = field(default_factory=list)


@dataclass
class Health:
    partitions: list[PartitionHealth]
    workers: list[tuple[str, float]]  # (name, seconds since its last heartbeat), freshest first
    deliveries: dict[str, dict[str, int]]  # channel -> status -> count, last hour
    models: list[ModelHealth] = field(default_factory=list)

    @property
    def dead_letters(self) -> int:
        return sum(p.dlq for p in self.partitions)


async def gather(rt: Runtime) -> Health:
    k = rt.keys
    parts = []
    for p in range(k.partitions):
        async with rt.redis.pipeline(transaction=False) as pipe:
            for stream in (k.inbound(p), k.outbox(p), k.dlq(p)):
                pipe.xlen(stream)
            inbound, outbox, dlq = await pipe.execute()
        health = PartitionHealth(p, inbound, outbox, dlq)
        health.groups.append(await _group(rt, k.inbound(p), WORKERS, "workers (inbound)"))
        health.groups.append(await _group(rt, k.outbox(p), SENDERS, "senders (outbox)"))
        parts.append(health)
    now = time.time()
    beats = cast(dict[str, str], await rt.redis.hgetall(k.workers()))  # a decoding client
    workers = sorted(((name, max(0.0, now - float(at))) for name, at in beats.items()), key=lambda w: w[1])
    models = await modelhealth.gather(rt.redis, rt.keys)
    return Health(parts, workers, await deliveries_last_hour(rt, now), models)


async def _group(rt: Runtime, stream: str, name: str, label: str) -> Group:
    try:
        found = await rt.streams.backlog(stream, name)
    except ResponseError:  # no stream yet
        found = None
    return Group(label) if found is None else Group(label, lag=found[0], pending=found[1])


async def deliveries_last_hour(rt: Runtime, now: float | None = None) -> dict[str, dict[str, int]]:
    """Delivery outcomes per channel and status over the last 60 minutes (the outbox counts them)."""
    minute = int((now or time.time()) // 60)
    async with rt.redis.pipeline(transaction=False) as pipe:
        for m in range(minute - 59, minute + 1):
            pipe.hgetall(rt.keys.deliveries(m))
        buckets = await pipe.execute()
    out: dict[str, dict[str, int]] = {}
    for bucket in buckets:
        for name, count in bucket.items():
            channel, _, status = name.rpartition(":")
            row = out.setdefault(channel, {})
            row[status] = row.get(status, 0) + int(count)
    return dict(sorted(out.items()))
