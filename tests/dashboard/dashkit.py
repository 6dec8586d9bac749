"""Helpers for the dashboard tests: an app with test agents, a sink channel, a worker and a sender."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI
from helpers import background, eventually
from plugins import ApprovalAgent, EchoAgent, FailingAgent, SinkChannel
from pydantic import SecretStr
from servers import app_server

from gateway.events import InboundMessage
from gateway.outbox import Outbox
from gateway.runtime import Runtime, running
from gateway.web.app import create_app
from gateway.web.dashboard import close_streams
from gateway.worker import Worker

TOKEN = "dash-token-0123456789"


@dataclass
class Sink:
    """A provider on loopback that records what it is sent; `failing` makes it answer 500."""

    url: str
    received: list[dict] = field(default_factory=list)
    failing: bool = False


@dataclass
class Dash:
    rt: Runtime
    app: FastAPI
    client: httpx.AsyncClient  # logged in (or open), cookies kept
    csrf: str = ""

    async def page(self, path: str) -> httpx.Response:
        r = await self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', r.text) or re.search(r'data-csrf="([^"]+)"', r.text)
        if found:
            self.csrf = found.group(1)
        return r

    async def post(self, path: str, data: dict | None = None, **kw) -> httpx.Response:
        return await self.client.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)


async def login(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    form = await client.get("/dashboard/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
    return await client.post("/dashboard/login", data={"token": token, "nonce": nonce, "next": "/"})


@contextlib.asynccontextmanager
async def dashboard(
    settings,
    sink: Sink | None = None,
    *,
    token: str | None = TOKEN,
    workers: bool = True,
    agents=None,
    over_http: bool = False,
) -> AsyncIterator[Dash]:
    """An app with a runtime, a worker and a sender, logged in when a token is set.

    Requests go through ASGI, or with `over_http` to a real server on loopback (streams need one).
    """
    settings = settings.model_copy(update={"api_token": SecretStr(token) if token else None})
    channels = [SinkChannel(sink.url)] if sink else []
    async with contextlib.AsyncExitStack() as stack:
        rt = await stack.enter_async_context(
            running(
                settings,
                agents=agents or [EchoAgent(), ApprovalAgent(), FailingAgent()],
                channels=channels,
                builtins=False,
            )
        )
        app = create_app(settings, rt)
        if over_http:
            url = await stack.enter_async_context(app_server(app, before_stop=lambda: close_streams(app)))
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
        else:
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
            )
        await stack.enter_async_context(background(*([Worker(rt, "w1"), Outbox(rt, "o1")] if workers else [])))
        dash = Dash(rt, app, client)
        if token:
            r = await login(client, token)
            assert r.status_code == 303, r.text
        await dash.page("/")
        yield dash


def message(
    i: str, text: str, *, channel: str = "test", sender: str = "+15550001", conversation: str | None = None
) -> InboundMessage:
    return InboundMessage(id=i, channel=channel, conversation=conversation or f"conv-{i}", sender=sender, text=text)


async def wait_status(rt: Runtime, thread_id: str, status: str):
    async def check():
        thread = await rt.store.load(thread_id)
        return thread if thread is not None and thread.status == status else None

    return await eventually(check)


async def sse_events(response: httpx.Response) -> AsyncIterator[dict]:
    """The events of a text/event-stream response: {"event", "data", "id"}, and comments as {"comment"}."""
    event: dict = {}
    async for line in response.aiter_lines():
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")
