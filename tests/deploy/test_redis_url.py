"""FRONTDESK_REDIS_URL: the cluster and Sentinel forms, taken apart."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from gateway.errors import ConfigError
from gateway.store.connection import RedisTarget, make_client, parse_target, redacted


def test_a_plain_url_is_left_to_redis_py():
    assert parse_target("redis://:pw@127.0.0.1:6379/2") is None
    assert parse_target("rediss://cache.example.com:6380/0") is None


def test_cluster_url_names_startup_nodes_and_credentials():
    target = parse_target("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert target == RedisTarget(
        kind="cluster", nodes=[("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002)], username="app", password="s@cret"
    )
    assert parse_target("rediss+cluster://redis-0").tls
    assert parse_target("redis+cluster://redis-0").nodes == [("redis-0", 6379)]
    assert parse_target("redis+cluster://redis-0:6379/0").db == 0


def test_sentinel_url_names_sentinels_service_and_db():
    target = parse_target("redis+sentinel://:pw@s1:26379,s2:26379/frontdesk/3?sentinel_password=spw")
    assert target.kind == "sentinel"
    assert target.nodes == [("s1", 26379), ("s2", 26379)]
    assert (target.service, target.db, target.password, target.username) == ("frontdesk", 3, "pw", None)
    assert target.options == {"sentinel_password": "spw"}
    assert parse_target("redis+sentinel://s1:26379/frontdesk").db == 0


@pytest.mark.parametrize(
    "url, complaint",
    [
        ("redis+cluster://redis-0:6379/2", "only database 0"),
        ("redis+sentinel://s1:26379", "/<service name>"),
        ("redis+sentinel://s1:26379/frontdesk/x", "/<service name>"),
        ("redis+cluster://", "at least one host"),
        ("redis+cluster://redis-0:port", "not host:port"),
        ("redis+cluster://redis-0:6379?timeout=3", "unknown option"),
    ],
)
def test_a_bad_url_names_the_setting(url, complaint):
    with pytest.raises(ConfigError, match="FRONTDESK_REDIS_URL") as caught:
        parse_target(url)
    assert complaint in str(caught.value)


async def test_each_form_gets_its_client():
    """Constructing a client dials nothing: a process starts even while Redis is away."""
    clients = [
        make_client("redis://127.0.0.1:1/0"),
        make_client("redis+cluster://127.0.0.1:1,127.0.0.1:2"),
        make_client("redis+sentinel://127.0.0.1:1/frontdesk"),
    ]
    try:
        # Each is redis-py's client (subclassed only to raise Unavailable for an outage).
        assert isinstance(clients[0], Redis) and not isinstance(clients[0].connection_pool, SentinelConnectionPool)
        assert isinstance(clients[1], RedisCluster)
        assert isinstance(clients[2], Redis) and clients[2].connection_pool.service_name == "frontdesk"
    finally:
        for client in clients:
            await client.aclose()


def test_redacted_drops_credentials_from_every_form():
    assert redacted("redis://:pw@h:6379/0") == "redis://h:6379/0"
    assert redacted("redis+cluster://u:pw@a:1,b:2") == "redis+cluster://a:1,b:2"
    assert (
        redacted("redis+sentinel://:pw@s1:26379,s2:26379/svc/1?sentinel_password=x")
        == "redis+sentinel://s1:26379,s2:26379/svc/1"
    )
