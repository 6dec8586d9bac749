"""A fake model API on loopback: records each request and answers from a script.

It lives in conftest (not a helper module) because the test tree has no packages,
and a plain `fakes.py` could collide by name with another directory's.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from servers import LoopbackServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.settings import Settings

# A scripted answer is (status, json body) or (status, json body, headers), or HANG to
# never answer (until the server stops). Plain values, so tests need not import conftest.
HANG = "hang"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    json: Any


class FakeApi:
    """On a LoopbackServer (its own thread and loop), so the client under test meets a real socket."""

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.requests: list[Seen] = []
        self._stopping = threading.Event()  # releases requests held by HANG
        self._server = LoopbackServer(Starlette(routes=[Route("/{path:path}", self._answer, methods=["POST"])]))

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeApi:
        self._server.__enter__()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.__exit__(None, None, None)

    async def _answer(self, request: Request) -> Response:
        self.requests.append(Seen("/" + request.path_params["path"], dict(request.headers), await request.json()))
        # The last reply repeats, so "500 every time" is a one-line script.
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if reply == HANG:
            while not self._stopping.is_set():  # noqa: ASYNC110 - a threading.Event, set from the test's thread
                await asyncio.sleep(0.02)
            return Response(status_code=503)
        status, body, headers = reply if len(reply) == 3 else (*reply, None)
        return JSONResponse(body, status_code=status, headers=headers)


@pytest.fixture
def fake_api():
    """Start a FakeApi answering the given replies in order; stopped after the test."""
    servers: list[FakeApi] = []

    def start(*script: Any) -> FakeApi:
        server = FakeApi(list(script))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def settings_for():
    """Settings pointing both vendors at `url`, with a short timeout and one retry."""

    def build(url: str, **overrides: Any) -> Settings:
        values = dict(
            openai_base_url=f"{url}/v1",
            openai_api_key="test-key",
            anthropic_base_url=url,
            anthropic_api_key="test-key",
            model_timeout=0.5,
            model_retries=1,
        )
        return Settings(**(values | overrides), _env_file=None)

    return build
