"""Exactly once when Slack's answer is lost: each post names its outbound id in metadata, and a
post whose outcome is unknown is looked up (conversations.replies / .history) before it is tried again."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fake_slack import HANG, RESET, SECRET, TAKEN, TEAM, TOKEN, FakeSlack, Reply, event_body, mention, signed
from helpers import background, eventually, make_settings
from plugins import EchoAgent
from slack_app import outbound, slack_app

import channels.slack as slack
from channels.slack.lookup import tag
from gateway.errors import DeliveryFailed
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker

ROOT = "1700000000.000100"


@pytest.fixture
async def fake():
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def channel(redis_url, prefix, fake, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_UPLOAD_OVER", "0")  # long texts in parts, not as a file
    settings = make_settings(
        redis_url, prefix, slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=fake.url, slack_timeout=0.5
    )
    async with running(settings, builtins=False, channels=[slack.channel]) as rt:
        yield rt.channels["slack"]


async def test_a_post_whose_answer_is_lost_is_found_and_not_posted_again(channel, fake):
    fake.script("chat.postMessage", RESET)  # stored, then the connection dropped before the answer
    sent = await channel.send(outbound())
    [stored] = fake.messages["C1"]
    assert sent.detail == stored["ts"]
    assert stored["metadata"] == tag("th_x-1", 0)
    assert len(fake.to("chat.postMessage", ok=None)) == 1
    [lookup] = fake.to("conversations.replies")
    assert lookup["ts"] == ROOT and lookup["include_all_metadata"] is True


async def test_a_post_slack_never_took_is_posted_once_more(channel, fake):
    fake.script("chat.postMessage", HANG)  # taken, never acted on, never answered
    sent = await channel.send(outbound())
    [stored] = fake.messages["C1"]
    assert sent.detail == stored["ts"] and len(fake.to("chat.postMessage", ok=None)) == 2


async def test_slacks_own_maybe_done_error_is_looked_up_too(channel, fake):
    fake.script("chat.postMessage", Reply(status=200, body={"ok": False, "error": "internal_error"}))
    await channel.send(outbound())
    assert len(fake.messages["C1"]) == 1 and len(fake.to("conversations.replies")) == 1


async def test_the_lookup_rate_limited_leaves_it_ambiguous(channel, fake):
    fake.script("chat.postMessage", RESET)
    fake.script("conversations.replies", Reply(status=429, body={"ok": False, "error": "ratelimited"}))
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(outbound())
    assert failed.value.ambiguous and not failed.value.retryable
    assert len(fake.messages["C1"]) == 1  # the one Slack has; nothing posted after the doubt


async def test_another_message_of_the_thread_is_not_mistaken_for_it(channel, fake):
    await channel.send(outbound("first", id="th_x-1"))
    fake.script("chat.postMessage", HANG)
    await channel.send(outbound("second", id="th_x-3"))
    assert [m["text"] for m in fake.messages["C1"]] == ["first", "second"]


async def test_a_long_thread_is_read_page_by_page(channel, fake):
    fake.messages["C1"] += [{"type": "message", "ts": f"1700000000.{i:06d}", "thread_ts": ROOT} for i in range(450)]
    fake.script("chat.postMessage", RESET)
    sent = await channel.send(outbound())
    assert sent.detail == fake.messages["C1"][-1]["ts"] and len(fake.messages["C1"]) == 451
    assert [c.get("cursor") for c in fake.to("conversations.replies")] == [None, "200", "400"]


async def test_a_lost_part_of_a_long_message_is_found_and_the_rest_follow(channel, fake):
    text = "\n".join(f"line {i} " + "x" * 80 for i in range(200))  # past a markdown block: in parts
    fake.script("chat.postMessage", Reply(body=None), RESET)  # part 1 fine, part 2's answer lost
    await channel.send(outbound(text))
    parts = fake.messages["C1"]
    assert len(parts) > 2 and [m["metadata"]["event_payload"]["part"] for m in parts] == list(range(len(parts)))


async def test_a_root_post_is_looked_up_in_the_channel_history(channel, fake):
    fake.script("chat.postMessage", RESET)
    sent = await channel.send(outbound("who is on call?", address="C5", reply_to={}))
    [stored] = fake.messages["C5"]
    assert sent.conversation == f"{TEAM}/C5/{stored['ts']}"
    [lookup] = fake.to("conversations.history")
    assert lookup["channel"] == "C5" and lookup["include_all_metadata"] is True


async def test_through_the_outbox_a_lost_answer_is_recorded_sent_once(redis_url, prefix):
    ts = "1710000000.000100"
    async with slack_app(redis_url, prefix, EchoAgent(), slack_timeout=0.5) as app:
        app.fake.script("chat.postMessage", RESET)
        await app.event(mention("hi", ts=ts), "Ev1")
        thread = await eventually(lambda: _delivered(app, f"{TEAM}/C1/{ts}"))
        [stored] = app.fake.messages["C1"]
        assert [(e.status, e.detail) for e in thread.events if e.type == "delivery"] == [("sent", stored["ts"])]
        assert thread.status == "waiting_human" and await app.rt.streams.dlq_entries() == []


async def _delivered(app, conversation):
    thread = await app.thread(conversation)
    return thread if any(e.type == "delivery" for e in thread.events) else None


async def test_recovering_a_long_message_remembers_the_parts_slack_has(channel, fake):
    text = "\n".join(f"line {i} " + "x" * 80 for i in range(200))  # past a markdown block: in parts
    fake.script("chat.postMessage", Reply(body=None), TAKEN)  # part 1 posted, part 2 taken and never answered
    sending = asyncio.create_task(channel.send(outbound(text)))
    await eventually(lambda: len(fake.messages["C1"]) == 2)
    sending.cancel()  # the sender stopped while Slack held the answer to part 2
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert await channel.recover(outbound(text)) is None  # not all of it
    await channel.send(outbound(text))
    parts = fake.messages["C1"]
    assert [m["metadata"]["event_payload"]["part"] for m in parts] == list(range(len(parts)))


@pytest.mark.parametrize("reply, posts", [(TAKEN, 1), (HANG, 2)], ids=["taken", "never-reached"])
async def test_a_sender_stopped_mid_post_is_settled_by_reading_slack_back(redis_url, prefix, reply, posts):
    """The sender is stopped while Slack holds the answer; the next one reads the thread instead of guessing."""
    async with FakeSlack() as fake:
        values = dict(slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=fake.url, default_agent="echo")
        settings = make_settings(redis_url, prefix, shutdown_grace=0.0, **values)
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack.channel]) as rt:
            fake.script("chat.postMessage", reply)
            raw = json.dumps(event_body(mention("hi", ts="1710000000.000100"), "Ev1"))
            transport = httpx.ASGITransport(app=create_app(settings, rt))
            async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk.test") as http:
                assert (await http.post("/slack/events", content=raw, headers=signed(raw))).status_code == 200
            async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                await eventually(lambda: fake.to("chat.postMessage", ok=None))  # o1 is waiting for the answer
            async with background(Worker(rt, "w2"), Outbox(rt, "o2")):
                thread = await eventually(lambda: _settled(rt, f"{TEAM}/C1/1710000000.000100"))
            [stored] = fake.messages["C1"]
            assert [(e.status, e.detail) for e in thread.events if e.type == "delivery"] == [("sent", stored["ts"])]
            assert len(fake.to("chat.postMessage", ok=None)) == posts
            assert fake.to("conversations.replies")[0]["include_all_metadata"] is True


async def _settled(rt, conversation):
    thread_id = await rt.ingest.thread_for("slack", conversation)
    thread = await rt.store.load(thread_id) if thread_id else None
    return thread if thread and any(e.type == "delivery" for e in thread.events) else None


async def test_a_markdown_block_post_is_tagged_and_looked_up_too(channel, fake):
    fake.script("chat.postMessage", RESET)
    sent = await channel.send(outbound("# Plan\n\n- one\n  - nested\n- two"))
    [stored] = fake.messages["C1"]
    post = fake.to("chat.postMessage", ok=None)[0]
    assert post["blocks"][0]["type"] == "markdown" and stored["metadata"] == tag("th_x-1", 0)
    assert sent.detail == stored["ts"] and len(fake.to("chat.postMessage", ok=None)) == 1
    assert await channel.recover(outbound("# Plan\n\n- one\n  - nested\n- two")) is not None
