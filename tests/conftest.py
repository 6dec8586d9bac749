"""Shared fixtures: a real Redis (the test server, else an embedded one), a key
prefix per test, and runtimes built the way the CLI builds them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis
from helpers import make_settings, plain_tracebacks

from gateway.settings import Settings
from gateway.store.embedded import embedded_redis


@pytest.fixture(scope="session", autouse=True)
def _plain_tracebacks() -> None:
    plain_tracebacks()  # tests/helpers.py says why


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """FRONTDESK_TEST_REDIS_URL when set (e.g. redis://127.0.0.1:6379/0), else an embedded server."""
    url = os.environ.get("FRONTDESK_TEST_REDIS_URL")
    if url:
        yield url
        return
    with embedded_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    name = f"fdtest-{secrets.token_hex(4)}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        batch = list(client.scan_iter(match=f"{name}:*", count=1000))
        for i in range(0, len(batch), 500):
            client.delete(*batch[i : i + 500])
    finally:
        client.close()


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return make_settings(redis_url, prefix)
