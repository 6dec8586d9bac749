"""The error tree in practice: HTTP statuses at the edge, Redis outages as Unavailable, loop bugs logged."""

from __future__ import annotations

import httpx
import pytest
import structlog
from helpers import background, eventually, free_port, make_settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from servers import app_server

from agents import load_agents
from gateway import errors, loops, metrics
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.store.connection import make_client
from gateway.web.app import create_app
from gateway.worker import Worker


def _rejections() -> list[type[errors.InboundRejected]]:
    found, todo = [], [errors.InboundRejected]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_the_tree_has_one_root():
    for cls in (errors.ModelError, errors.StepError, errors.LeaseLost, errors.NotFound, errors.Unavailable):
        assert issubclass(cls, errors.FrontdeskError)
    assert issubclass(errors.NotFound, errors.InboundRejected) and errors.NotFound.status == 404


@pytest.fixture
async def api(settings):
    async with running(settings, builtins=False, agents=[load_agents]) as rt:
        app = create_app(settings, rt)

        @app.get("/raise/{name}")
        async def raise_it(name: str) -> None:
            cls = next(c for c in _rejections() if c.__name__ == name)
            raise cls("refused", retry_after=7) if cls is errors.RateLimited else cls("refused")

        async with app_server(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield client


@pytest.mark.parametrize("cls", _rejections(), ids=lambda c: c.__name__)
async def test_each_rejection_answers_its_own_status(api, cls):
    r = await api.get(f"/raise/{cls.__name__}")
    assert r.status_code == cls.status and r.json() == {"detail": "refused"}
    assert r.headers.get("retry-after") == ("7" if cls is errors.RateLimited else None)


async def test_service_functions_raise_the_tree_and_the_app_maps_it(api):
    assert (await api.get("/api/v1/threads/th_missing")).status_code == 404
    r = await api.post("/api/v1/threads/th_missing/events", json={"type": "human_response", "text": "hi"})
    assert r.status_code == 404 and r.json() == {"detail": "no such thread"}
    assert (await api.post("/api/v1/threads/th_missing/deliveries/x/retry")).status_code == 404
    assert (await api.post("/api/v1/dlq/0:1-1/replay")).status_code == 404
    assert (await api.post("/api/v1/dlq/nonsense/replay")).status_code == 400  # Malformed
    # A thread no worker has run yet waits for no answer: Conflict.
    launched = await api.post("/api/v1/threads", json={"agent": "calculator", "text": "6 times 7?"})
    thread_id = launched.json()["id"]
    r = await api.post(f"/api/v1/threads/{thread_id}/events", json={"type": "human_response", "text": "2"})
    assert r.status_code == 409
    r = await api.post(f"/api/v1/threads/{thread_id}/deliveries/{thread_id}-1/retry")
    assert r.status_code == 404 and "not in the dead-letter stream" in r.json()["detail"]


async def test_redis_down_reads_as_unavailable_everywhere(prefix):
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0", prefix)
    async with running(settings, builtins=False, agents=[load_agents]) as rt:
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            r = await client.get("/api/v1/threads/th_x")  # a pipeline
            assert r.status_code == 503 and r.headers["retry-after"] == str(errors.Unavailable.retry_after)
            assert (await client.get("/readyz")).status_code == 503
        with pytest.raises(errors.Unavailable) as caught:
            await rt.redis.get("k")
        assert isinstance(caught.value.__cause__, RedisConnectionError)
        with pytest.raises(errors.Unavailable):
            await rt.store.renew("th_x", "me", 1000)  # a script, through ScriptBatch


async def test_a_bad_command_is_not_an_outage(redis_url, prefix):
    client = make_client(redis_url)
    try:
        await client.set(f"{prefix}:s", "a string")
        with pytest.raises(ResponseError):
            await client.lpush(f"{prefix}:s", "x")
        async with client.pipeline(transaction=False) as pipe:
            pipe.lpush(f"{prefix}:s", "x")
            with pytest.raises(ResponseError):
                await pipe.execute()
    finally:
        await client.aclose()


# ---------------------------------------------------------------- loops


def _failures(logs: list[dict], loop: str) -> list[dict]:
    return [e for e in logs if e.get("loop") == loop and e["event"] == "loop failed; carrying on"]


@pytest.mark.parametrize(
    ("loop", "stream", "runner"),
    [
        ("worker.claim", lambda k: k.inbound(0), lambda rt: Worker(rt, "w1")),
        ("outbox.claim", lambda k: k.outbox(0), lambda rt: Outbox(rt, "o1")),
    ],
    ids=["worker", "outbox"],
)
async def test_a_claim_loop_logs_a_bug_at_error_with_its_traceback_and_counts_it(
    settings, monkeypatch, loop, stream, runner
):
    """A stream key that holds a string: XAUTOCLAIM answers WRONGTYPE, which no retry mends."""
    monkeypatch.setattr(loops, "_logged", {})
    before = metrics.LOOP_ERRORS.labels(loop)._value.get()
    async with running(settings, builtins=False, agents=[load_agents]) as rt:
        await rt.redis.set(stream(rt.keys), "not a stream")
        with structlog.testing.capture_logs() as logs:
            async with background(runner(rt)):
                await eventually(lambda: metrics.LOOP_ERRORS.labels(loop)._value.get() >= before + 2)
    first, *_ = _failures(logs, loop)
    # log.exception: error level with the traceback (older structlog's capture_logs names the method instead).
    assert first["log_level"] in ("error", "exception") and first["exc_info"] is True
    assert len(_failures(logs, loop)) == 1  # the second within the minute is counted, not logged
