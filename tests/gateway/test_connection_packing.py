"""Commands packed by hiredis must reach Redis byte for byte as redis-py would have sent them."""

from __future__ import annotations

from redis.asyncio.connection import Connection

from gateway.store.connection import HIREDIS, _packed


def test_packed_commands_are_the_bytes_redis_py_sends():
    assert HIREDIS  # a dependency (redis[hiredis]): without it nothing here is exercised
    plain, packed = Connection(), _packed(Connection)()
    cases = [
        (
            "EVALSHA",
            "a" * 40,
            3,
            "k:{p0}:1",
            "k:{p0}:2",
            "k:{p0}:3",
            "owner",
            "",
            0,
            12,
            -5,
            "é ünïcode",
            b"\x00\xffbytes",
        ),
        ("SET", "key", "value", "EX", 60, "NX"),
        ("ZADD", "z", 1.5, "m"),  # a float: redis-py's own packing
        ("CONFIG GET", "maxmemory"),  # a two-word command name: redis-py's own packing
        ("HSET", "h", "big", "x" * 100_000),  # above redis-py's buffer cutoff
    ]
    for args in cases:
        assert b"".join(packed.pack_command(*args)) == b"".join(plain.pack_command(*args)), args
