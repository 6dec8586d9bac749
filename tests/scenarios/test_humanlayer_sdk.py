"""The real `humanlayer` SDK (0.7.9), sync and async, against a running frontdesk.

Only the two settings the SDK reads change (its base URL and key); the SDK's own poll
sleep is shortened so a test does not wait 3 s per poll. Slack is the fake on loopback,
and button clicks are signed as Slack signs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import background, eventually, make_settings
from humanlayer import (
    AsyncHumanLayer,
    ContactChannel,
    FunctionCallStatus,
    HumanContactStatus,
    HumanLayer,
    ResponseOption,
    SlackContactChannel,
)
from servers import app_server

import channels.slack as slack
from agents.humanlayer import HumanLayerAgent
from gateway.http import create_app
from gateway.humanlayer.service import thread_id
from gateway.outbox import Outbox
from gateway.runtime import Runtime, running
from gateway.worker import Worker

_FAKES = str(Path(__file__).resolve().parents[1] / "channels")
if _FAKES not in sys.path:
    sys.path.append(_FAKES)
from fake_slack import SECRET, TOKEN, FakeSlack, click, signed  # noqa: E402

API_TOKEN = "fd-api-token-for-tests"


def quick(_seconds) -> None:
    time.sleep(0.05)  # the SDK sleeps 3 s before every poll; the count of polls is not under test


async def aquick(_seconds) -> None:
    await asyncio.sleep(0.05)


@dataclass
class Frontdesk:
    url: str
    rt: Runtime
    fake: FakeSlack
    http: httpx.AsyncClient

    @property
    def base(self) -> str:
        return f"{self.url}/humanlayer/v1"

    def sdk(self, key: str = API_TOKEN, run_id: str = "run-1") -> HumanLayer:
        return HumanLayer(api_key=key, api_base_url=self.base, sleep=quick, run_id=run_id)

    def async_sdk(self, run_id: str = "run-2") -> AsyncHumanLayer:
        return AsyncHumanLayer(api_key=API_TOKEN, api_base_url=self.base, sleep=aquick, run_id=run_id)

    async def approval_post(self) -> dict:
        [post] = await eventually(lambda: [p for p in self.fake.posts() if p.get("blocks")])
        return post

    async def click(self, post: dict, *, user: str, approved: bool, n: int) -> None:
        button = next(b for b in post["blocks"][1]["elements"] if (b["action_id"] == "frontdesk_approve") == approved)
        ts = next(c.reply["ts"] for c in self.fake.calls if c.method == "chat.postMessage" and c.args.get("blocks"))
        raw = click(
            user=user,
            channel=post["channel"],
            message_ts=ts,
            thread_ts=None,
            value=button["value"],
            approved=approved,
            action_ts=f"1710000300.{n}",
        )
        headers = signed(raw, content_type="application/x-www-form-urlencoded")
        r = await self.http.post(f"{self.url}/slack/events", content=raw, headers=headers)
        assert r.status_code == 200, r.text

    async def thread(self, kind: str, call_id: str):
        return await self.rt.store.load(thread_id(kind, call_id))  # type: ignore[arg-type]

    async def status(self, kind: str, call_id: str, status: str) -> bool:
        thread = await self.thread(kind, call_id)
        return thread is not None and thread.status == status


@contextlib.asynccontextmanager
async def frontdesk(redis_url: str, prefix: str, **overrides) -> AsyncIterator[Frontdesk]:
    async with FakeSlack() as fake:
        values = dict(slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=fake.url, api_token=API_TOKEN)
        settings = make_settings(redis_url, prefix, **{**values, **overrides})
        async with running(settings, agents=[HumanLayerAgent()], builtins=False, channels=[slack.channel]) as rt:
            async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(timeout=10) as http:
                async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                    yield Frontdesk(url, rt, fake, http)


def in_slack(channel: str = "C1", **kw) -> ContactChannel:
    return ContactChannel(slack=SlackContactChannel(channel_or_user_id=channel, **kw))


async def test_sync_decorator_approved_from_code_runs_the_function(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-sync1"

        @hl.require_approval(contact_channel=in_slack(context_about_channel_or_user="the ops channel"))
        def transfer(amount: int, to: str) -> str:
            return f"sent {amount} to {to}"

        result = asyncio.create_task(asyncio.to_thread(transfer, amount=5, to="bob"))
        post = await fd.approval_post()
        assert post["channel"] == "C1" and "transfer(amount=5, to='bob')" in post["text"]
        await eventually(lambda: fd.status("function_call", "call-sync1", "waiting_approval"))

        approver = fd.sdk(run_id="approver")
        answered = await asyncio.to_thread(
            approver.respond_to_function_call, "call-sync1", FunctionCallStatus(approved=True, comment="fine")
        )
        assert answered.status.approved is True and answered.status.responded_at is not None
        assert await result == "sent 5 to bob"

        thread = await fd.thread("function_call", "call-sync1")
        assert [e.type for e in thread.events if e.type not in ("delivery", "note")] == [
            "user_message",
            "approval_requested",
            "approval_decision",
            "done_for_now",
        ]
        [update] = await eventually(lambda: fd.fake.to("chat.update"))
        assert update["text"].startswith("Approved by api at ")

        # A second answer is refused, and the first stands.
        again = await fd.http.post(
            f"{fd.base}/agent/function_calls/call-sync1/respond",
            json={"approved": False, "comment": "changed my mind"},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert again.status_code == 409 and again.json() == {"detail": "call already has a response"}
        got = await asyncio.to_thread(hl.get_function_call, "call-sync1")
        assert got.status.approved is True and got.status.comment == "fine"


async def test_async_denial_without_a_comment_reaches_the_llm_as_a_denial(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.async_sdk()
        hl.genid = lambda p: f"{p}-async1"

        @hl.require_approval(contact_channel=in_slack("C2", context_about_channel_or_user="the finance channel"))
        async def wire(amount: int) -> str:
            raise AssertionError("a denied call must not run")

        result = asyncio.create_task(wire(amount=100))
        await fd.approval_post()
        await eventually(lambda: fd.status("function_call", "call-async1", "waiting_approval"))
        await hl.respond_to_function_call("call-async1", FunctionCallStatus(approved=False))
        assert await result == "User in the finance channel denied wire with message: denied (no comment given)"


async def test_slack_buttons_only_allowed_responders_decide(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-slack1"

        @hl.require_approval(contact_channel=in_slack("C3", allowed_responder_ids=["U7"]))
        def drop_table(name: str) -> str:
            raise AssertionError("a denied call must not run")

        result = asyncio.create_task(asyncio.to_thread(drop_table, name="users"))
        post = await fd.approval_post()
        await eventually(lambda: fd.status("function_call", "call-slack1", "waiting_approval"))

        # Someone in the channel but not allowed: told privately, nothing changes.
        await fd.click(post, user="U9", approved=True, n=1)
        [refusal] = await eventually(lambda: fd.fake.to("chat.postEphemeral"))
        assert refusal["user"] == "U9"
        thread = await fd.thread("function_call", "call-slack1")
        assert thread.status == "waiting_approval" and fd.fake.to("chat.update") == []
        assert (await asyncio.to_thread(hl.get_function_call, "call-slack1")).status.approved is None

        await fd.click(post, user="U7", approved=False, n=2)
        assert await result == "User denied drop_table with message: denied (no comment given)"
        [update] = await eventually(lambda: fd.fake.to("chat.update"))
        assert update["text"].startswith("Denied by <@U7> at ")
        got = await asyncio.to_thread(hl.get_function_call, "call-slack1")
        assert got.status.approved is False


async def test_slack_channel_without_allowed_ids_anyone_there_approves(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-slack2"

        @hl.require_approval(contact_channel=in_slack("C4"))
        def restart(service: str) -> str:
            return f"restarted {service}"

        result = asyncio.create_task(asyncio.to_thread(restart, service="api"))
        post = await fd.approval_post()
        await eventually(lambda: fd.status("function_call", "call-slack2", "waiting_approval"))
        await fd.click(post, user="U5", approved=True, n=1)
        assert await result == "restarted api"
        [update] = await eventually(lambda: fd.fake.to("chat.update"))
        assert update["text"].startswith("Approved by <@U5> at ")


async def test_human_as_tool_answered_from_code_with_an_option(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        hl = fd.sdk()
        hl.genid = lambda p: f"{p}-ask1"
        options = [ResponseOption(name="yes", title="Yes please"), ResponseOption(name="no", prompt_fill="No thanks")]
        ask = hl.human_as_tool(contact_channel=in_slack("C5"), response_options=options)
        answer = asyncio.create_task(asyncio.to_thread(ask, "Deploy on Friday?"))
        [question] = await eventually(lambda: fd.fake.posts())
        assert "Deploy on Friday?" in question["text"] and "Yes please" in question["text"]
        await eventually(lambda: fd.status("human_contact", "call-ask1", "waiting_human"))
        await asyncio.to_thread(
            hl.respond_to_human_contact,
            "call-ask1",
            HumanContactStatus(response="after lunch", response_option_name="no"),
        )
        assert await answer == "after lunch"
        got = await asyncio.to_thread(hl.get_human_contact, "call-ask1")
        assert got.status.response_option_name == "no" and got.status.responded_at is not None


async def test_wire_rules_keys_duplicates_unknown_ids_and_secrets(redis_url, prefix):
    async with frontdesk(redis_url, prefix) as fd:
        # A wrong key: the decorator reports it and the function does not run; the body is JSON.
        wrong = fd.sdk(key="not-the-token")

        @wrong.require_approval(contact_channel=in_slack())
        def anything() -> str:
            raise AssertionError("must not run")

        said = await asyncio.to_thread(anything)
        assert said.startswith("Error fetching approval for anything: 401 Client Error")
        r = await fd.http.get(f"{fd.base}/project", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.headers["content-type"] == "application/json" and "detail" in r.json()
        assert fd.fake.posts() == []

        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        body = {
            "run_id": "run-9",
            "call_id": "call/odd|id",
            "spec": {
                "fn": "send",
                "kwargs": {"to": "x"},
                "channel": {"slack": {"channel_or_user_id": "C6", "bot_token": "xoxb-secret-of-theirs"}},
                "state": {"cursor": [1, 2, {"deep": None}], "n": 1.5},
            },
            "status": None,
        }
        # A trailing slash in the base (`//function_calls`) reaches the same route.
        first = await fd.http.post(f"{fd.base}//function_calls", json=body, headers=auth)
        assert first.status_code == 200, first.text
        created = first.json()
        assert created["call_id"] == "call/odd|id" and created["run_id"] == "run-9"
        assert created["spec"]["state"] == body["spec"]["state"]
        assert created["spec"]["channel"]["slack"]["bot_token"] is None
        assert created["status"]["approved"] is None and created["status"]["requested_at"].endswith("Z")

        # A second create of the call returns the stored one; it never overwrites.
        changed = json.loads(json.dumps(body))
        changed["spec"]["kwargs"] = {"to": "someone else"}
        second = await fd.http.post(f"{fd.base}/function_calls", json=changed, headers=auth)
        assert second.status_code == 200 and second.json()["spec"]["kwargs"] == {"to": "x"}
        [post] = await eventually(lambda: fd.fake.posts())
        assert "someone else" not in post["text"]

        missing = await fd.http.get(f"{fd.base}/function_calls/call-nobody", headers=auth)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
        missing = await fd.http.post(
            f"{fd.base}/agent/human_contacts/call-nobody/respond", json={"response": "x"}, headers=auth
        )
        assert missing.status_code == 404

        # The customer's bot token is nowhere: not in the thread, not in what Slack was sent.
        thread = await fd.thread("function_call", "call/odd|id")
        assert "xoxb-secret-of-theirs" not in thread.model_dump_json()
        assert all(c.authorization == f"Bearer {TOKEN}" for c in fd.fake.calls)
        pending = await fd.http.get(f"{fd.base}/agent/function_calls/pending", headers=auth)
        assert [c["call_id"] for c in pending.json()["items"]] == ["call/odd|id"]
