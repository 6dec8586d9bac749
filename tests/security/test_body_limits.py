"""Bodies over FRONTDESK_MAX_BODY_BYTES get 413 on every POST route, before authentication or parsing.

Checked over real HTTP, both with a declared Content-Length and chunked (no
Content-Length, counted as it streams). A declared size is refused before the
route runs; a chunked body when the route reads past the limit (a route that
takes no body, like a replay, never reads it). The bodies are a little over the
limit, so the client has finished writing when the answer comes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from seckit import API_TOKEN, stack
from test_inbound_auth import app_routes

LIMIT = 4096
ROUTES = ["/slack/events", "/twilio/sms", "/twilio/status", "/webhooks/echo", "/api/v1/threads"]


def _reads_body(url: str) -> bool:
    """Whether the route's handler reads the body (a chunked body is counted as it is read)."""
    return url in ROUTES or url == "/dashboard/login" or url.endswith("/events")


async def _chunks(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = min(1000, size - sent)
        sent += piece
        yield b"x" * piece


async def test_every_post_route_answers_413_declared_and_chunked(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path, max_body_bytes=LIMIT) as s:
        r = await s.http.post(
            "/api/v1/threads", json={"agent": "echo", "text": "hi"}, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        thread_id = r.json()["id"]
        posts = [path for method, path in app_routes(s.app) if method == "POST"]
        values = dict(agent="echo", thread_id=thread_id, outbound_id="th_x-1", ref="0:0-0", token="not.ours")
        urls = [p.format(**values) for p in posts]
        assert set(ROUTES) <= set(urls)
        before, counted = await s.rt.redis.xlen(s.rt.keys.inbound(0)), 0
        for url in urls:
            # Authenticated where a token is what authenticates: the limit still comes first.
            headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
            declared = await s.http.post(url, content=b"x" * (LIMIT + 500), headers=headers)
            assert declared.status_code == 413, (url, declared.status_code, declared.text[:200])
            if not _reads_body(url):
                continue  # a route that never reads its body never reads past the limit either
            chunked = await s.http.post(url, content=_chunks(LIMIT + 500), headers=headers)
            assert chunked.status_code == 413, (url, chunked.status_code, chunked.text[:200])
            assert (
                "content-length" not in chunked.request.headers
                and chunked.request.headers["transfer-encoding"] == "chunked"
            )
            counted += 1
        assert counted >= len(ROUTES) + 2
        assert await s.rt.redis.xlen(s.rt.keys.inbound(0)) == before


async def test_a_body_at_the_limit_is_read(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path, max_body_bytes=LIMIT) as s:
        text = "y" * (LIMIT - 100)
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        r = await s.http.post("/api/v1/threads", json={"agent": "echo", "text": text}, headers=headers)
        assert r.status_code == 201
        r = await s.http.post(
            "/api/v1/threads", content=_chunks(LIMIT), headers={**headers, "Content-Type": "application/json"}
        )
        assert r.status_code == 422  # read whole (not JSON), not refused for its size
