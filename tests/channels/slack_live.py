"""A running Slack gateway for the AI-app tests: the real app (in process), worker and outbox, a fake Slack."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fake_slack import SECRET, TOKEN, FakeSlack, event_body, signed
from helpers import background, eventually, make_settings

import channels.slack as slack
from gateway.outbox import Outbox
from gateway.runtime import Runtime, running
from gateway.web.app import create_app
from gateway.worker import Worker


@dataclass
class Live:
    fake: FakeSlack
    rt: Runtime
    http: httpx.AsyncClient

    async def event(self, event: dict, event_id: str) -> None:
        raw = json.dumps(event_body(event, event_id))
        r = await self.http.post("/slack/events", content=raw, headers=signed(raw))
        assert r.status_code == 200, r.text

    async def thread(self, conversation: str):
        """The conversation's thread, once it is written."""
        thread_id = await eventually(lambda: self.rt.ingest.thread_for("slack", conversation))
        return await eventually(lambda: self.rt.store.load(thread_id))

    async def status_is(self, conversation: str, status: str) -> bool:
        thread = await self.thread(conversation)
        return thread is not None and thread.status == status

    def statuses(self) -> list[str]:
        return [a["status"] for a in self.fake.to("assistant.threads.setStatus")]


@contextlib.asynccontextmanager
async def live(redis_url: str, prefix: str, agent, *, config: Path | None = None, **overrides) -> AsyncIterator[Live]:
    async with FakeSlack() as fake:
        values = dict(
            slack_bot_token=TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=fake.url,
            default_agent=agent.name,
            slack_ack_reaction="",
            config_path=config,
        )
        settings = make_settings(redis_url, prefix, **{**values, **overrides})
        async with running(settings, agents=[agent], builtins=False, channels=[slack.channel]) as rt:
            transport = httpx.ASGITransport(app=create_app(settings, rt))
            async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk.test") as http:
                async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                    yield Live(fake, rt, http)
