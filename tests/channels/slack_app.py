"""The whole app in process for the Slack feature tests: signed requests in through ASGI,
the worker and the outbox running, every Web API call landing on a fake Slack."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fake_slack import SECRET, TEAM, TOKEN, FakeSlack, click, event_body, signed
from helpers import background, eventually, make_settings

import channels.slack as slack
from gateway.events import OutboundMessage, Thread
from gateway.outbox import Outbox
from gateway.runtime import Runtime, running
from gateway.web.app import create_app
from gateway.worker import Worker


def outbound(text: str = "hello", **fields: Any) -> OutboundMessage:
    """A message for the channel to send: by default a reply in thread 1700000000.000100 of C1."""
    values: dict[str, Any] = dict(
        id="th_x-1",
        thread_id="th_x",
        channel="slack",
        address="U1",
        reply_to={"team": TEAM, "channel": "C1", "thread_ts": "1700000000.000100"},
        text=text,
    )
    values.update(fields)
    return OutboundMessage(**values)


@dataclass
class App:
    fake: FakeSlack
    rt: Runtime
    http: httpx.AsyncClient

    async def signed_post(self, path: str, raw: str, content_type: str = "application/json") -> httpx.Response:
        return await self.http.post(path, content=raw, headers=signed(raw, content_type=content_type))

    async def event(self, event: dict[str, Any], event_id: str) -> httpx.Response:
        r = await self.signed_post("/slack/events", json.dumps(event_body(event, event_id)))
        assert r.status_code == 200, r.text
        return r

    async def interaction(self, payload: dict[str, Any]) -> httpx.Response:
        from urllib.parse import urlencode

        raw = urlencode({"payload": json.dumps(payload)})
        return await self.signed_post("/slack/events", raw, "application/x-www-form-urlencoded")

    async def click(self, **kw: Any) -> httpx.Response:
        r = await self.signed_post("/slack/events", click(**kw), "application/x-www-form-urlencoded")
        assert r.status_code == 200, r.text
        return r

    async def thread(self, conversation: str) -> Thread:
        """The conversation's thread, once it is written."""
        thread_id = await eventually(lambda: self.rt.ingest.thread_for("slack", conversation))
        return await eventually(lambda: self.rt.store.load(thread_id))

    async def status(self, conversation: str, status: str) -> bool:
        return (await self.thread(conversation)).status == status


@contextlib.asynccontextmanager
async def slack_app(redis_url: str, prefix: str, *agents: Any, **overrides: Any) -> AsyncIterator[App]:
    async with FakeSlack() as fake:
        values = dict(
            slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=fake.url, default_agent=agents[0].name
        )
        settings = make_settings(redis_url, prefix, **{**values, **overrides})
        async with running(settings, agents=list(agents), builtins=False, channels=[slack.channel]) as rt:
            transport = httpx.ASGITransport(app=create_app(settings, rt))
            async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk.test") as http:
                async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                    yield App(fake, rt, http)
