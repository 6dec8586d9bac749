"""What each model's server last did: the request shape it settled on, and its last errors.

Workers call the models and the dashboard may run in another process, so what the health page
shows is kept in Redis. It is written only when something changes (a worker's first turn on a
model, a shape a server refused, a failed call), never on every step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.store.keys import Keys

KEPT_ERRORS = 10  # enough to tell one flaky call from a server that refuses every one


@dataclass
class ModelHealth:
    model: str
    endpoint: str = ""
    accepts: str = ""
    reported_at: float | None = None  # when a worker last reported the shape
    errors: list[tuple[float, str]] = field(default_factory=list)  # (when, message), newest first


async def report_shape(redis: Redis, keys: Keys, model: str, endpoint: str, accepts: str) -> None:
    entry = {"endpoint": endpoint, "accepts": accepts, "at": time.time()}
    await redis.hset(keys.models(), model, json.dumps(entry))


async def report_error(redis: Redis, keys: Keys, model: str, endpoint: str, accepts: str, message: str) -> None:
    key = keys.model_errors(model)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(key, json.dumps({"at": time.time(), "message": message[:1000]}))
        pipe.ltrim(key, 0, KEPT_ERRORS - 1)
        # The model appears on the page even if it never answered once.
        pipe.hsetnx(keys.models(), model, json.dumps({"endpoint": endpoint, "accepts": accepts, "at": None}))
        await pipe.execute()


async def gather(redis: Redis, keys: Keys) -> list[ModelHealth]:
    reported = {str(name): entry for name, entry in (await redis.hgetall(keys.models())).items()}
    names = sorted(reported)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.lrange(keys.model_errors(name), 0, KEPT_ERRORS - 1)
        errors = await pipe.execute()
    out = []
    for name, raw_errors in zip(names, errors, strict=True):
        entry = json.loads(reported[name])
        out.append(
            ModelHealth(
                model=name,
                endpoint=entry.get("endpoint", ""),
                accepts=entry.get("accepts", ""),
                reported_at=entry.get("at"),
                errors=[(e["at"], e["message"]) for e in map(json.loads, raw_errors)],
            )
        )
    return out
