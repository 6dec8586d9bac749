"""ScriptBatch: calls made together share a round trip, and each keeps its own answer."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.store.batch import ScriptBatch

# A fresh comment makes a script Redis has never seen, so the first batch meets NOSCRIPT.
_ECHO = """-- {tag}
if ARGV[1] == 'bad' then return redis.error_reply('refused ' .. ARGV[1]) end
redis.call('INCR', KEYS[1])
return {{ARGV[1], redis.call('GET', KEYS[1])}}
"""


@pytest.fixture
async def client(redis_url: str):
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    await r.aclose()


def _batch(client) -> ScriptBatch:
    return ScriptBatch(client, _ECHO.format(tag=secrets.token_hex(8)))


async def test_concurrent_calls_each_get_their_own_result(client, prefix):
    batch = _batch(client)
    key = f"{prefix}:count"
    answers = await asyncio.gather(*(batch(keys=[key], args=[f"call-{i}"]) for i in range(50)))
    assert [a[0] for a in answers] == [f"call-{i}" for i in range(50)]
    assert sorted(int(a[1]) for a in answers) == list(range(1, 51))  # every call ran, once


async def test_an_error_reaches_only_its_own_caller(client, prefix):
    batch = _batch(client)
    key = f"{prefix}:count"
    results = await asyncio.gather(
        *(batch(keys=[key], args=[arg]) for arg in ["a", "bad", "b"]), return_exceptions=True
    )
    assert results[0][0] == "a" and results[2][0] == "b"
    assert isinstance(results[1], ResponseError) and "refused bad" in str(results[1])
    assert await client.get(key) == "2"


async def test_a_lone_call_and_later_batches(client, prefix):
    batch = _batch(client)
    key = f"{prefix}:count"
    assert (await batch(keys=[key], args=["alone"]))[0] == "alone"
    again = await asyncio.gather(*(batch(keys=[key], args=[str(i)]) for i in range(3)))
    assert [a[0] for a in again] == ["0", "1", "2"]


async def test_a_cancelled_caller_does_not_stop_the_others(client, prefix):
    batch = _batch(client)
    key = f"{prefix}:count"
    calls = [asyncio.ensure_future(batch(keys=[key], args=[str(i)])) for i in range(5)]
    await asyncio.sleep(0)  # every call is queued in the batch now
    calls[2].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r[0] for i, r in enumerate(results) if i != 2] == ["0", "1", "3", "4"]
