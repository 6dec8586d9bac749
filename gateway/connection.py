"""One async Redis client per process, with a capped pool and reconnects.

A capped, blocking pool keeps a burst of requests from opening hundreds of
sockets: under load the p99 of an XADD falls when requests queue for a
connection instead of racing for new ones (measured in benchmarks/).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.settings import Settings

# Errors that mean "Redis is not there right now", as opposed to a bad command.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def make_client(url: str, max_connections: int = 64) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=10,
        decode_responses=True,
        health_check_interval=15,
        socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool


@contextlib.asynccontextmanager
async def connect_redis(settings: Settings, url: str | None = None) -> AsyncIterator[aioredis.Redis]:
    """A client for `url` (default: the settings'); closed on exit.

    It does not PING: a process whose Redis is down must still start and answer
    /readyz with 503 until Redis returns.
    """
    client = make_client(url or settings.redis_url or "", settings.redis_max_connections)
    try:
        yield client
    finally:
        await client.aclose()
