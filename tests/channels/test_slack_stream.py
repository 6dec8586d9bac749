"""Streamed answers against the fake Slack: pieces, steps, coalescing, 429s, and streams cut off."""

from __future__ import annotations

import pytest
from fake_slack import RESET, SECRET, TEAM, TOKEN, FakeSlack, Reply, mention, rate_limited
from helpers import eventually, make_settings
from plugins import EchoAgent, StepsAgent
from slack_live import live

import channels.slack as slack
from channels.slack.stream import _pieces
from gateway.errors import ConfigError, DeliveryFailed
from gateway.events import OutboundMessage
from gateway.runtime import running

THREAD_TS = "1700000000.000100"


@pytest.fixture
async def fake():
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def channel(redis_url, prefix, fake, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_STREAM", "true")
    monkeypatch.setenv("FRONTDESK_SLACK_STREAM_CHUNK", "100")
    monkeypatch.setenv("FRONTDESK_SLACK_STREAM_APPENDS", "4")
    settings = make_settings(
        redis_url,
        prefix,
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=fake.url,
        default_agent="echo",
    )
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack.channel]) as rt:
        yield rt.channels["slack"]


def answer(text: str, **fields) -> OutboundMessage:
    values = dict(
        id="th_s-4",
        thread_id="th_s",
        channel="slack",
        address="U1",
        reply_to={"team": TEAM, "channel": "C1", "thread_ts": THREAD_TS},
        text=text,
        kind="final",
    )
    values.update(fields)
    return OutboundMessage(**values)


TEXT = " ".join(f"word{i}" for i in range(120))  # about 900 characters


async def test_a_final_answer_streams_in_pieces_after_its_steps(channel, fake):
    sent = await channel.send(answer(TEXT, steps=["lookup_order", "refund"]))
    [start] = fake.to("chat.startStream")
    assert start["channel"] == "C1" and start["thread_ts"] == THREAD_TS
    assert start["recipient_user_id"] == "U1" and start["recipient_team_id"] == TEAM
    assert start["task_display_mode"] == "timeline"
    steps = [c for c in start["chunks"] if c["type"] == "task_update"]
    assert [(s["title"], s["status"]) for s in steps] == [("Ran lookup_order", "complete"), ("Ran refund", "complete")]
    appends = fake.to("chat.appendStream")
    assert 1 <= len(appends) <= 4  # coalesced: at most FRONTDESK_SLACK_STREAM_APPENDS
    assert len(fake.to("chat.stopStream")) == 1
    assert sent.detail == start_ts(fake)
    assert fake.stream_text(sent.detail) == TEXT  # every character once, in order
    assert fake.to("chat.postMessage", ok=None) == []


async def test_a_429_on_an_append_is_waited_out_and_nothing_doubles(channel, fake):
    fake.script("chat.appendStream", rate_limited(0))
    sent = await channel.send(answer(TEXT))
    assert [c.reply["error"] for c in fake.calls if c.method == "chat.appendStream" and not c.ok] == ["ratelimited"]
    assert fake.stream_text(sent.detail) == TEXT
    assert fake.to("chat.update", ok=None) == []  # no repair needed


async def test_an_append_whose_answer_is_lost_is_completed_with_the_whole_text(channel, fake):
    fake.script("chat.appendStream", RESET)  # Slack appends, the answer never comes: did it land?
    sent = await channel.send(answer(TEXT))
    assert fake.streams[sent.detail]["open"] is False
    [update] = fake.to("chat.update")
    assert update["ts"] == sent.detail and update["blocks"] == [{"type": "markdown", "text": TEXT}]
    assert fake.stream_text(sent.detail) == TEXT
    assert len(fake.to("chat.startStream")) == 1


async def test_a_send_tried_again_completes_the_stream_it_started_and_starts_none(channel, fake):
    fake.script("chat.stopStream", *[Reply(status=500, body={"ok": False, "error": "internal_server_error"})] * 2)
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(answer(TEXT))
    assert failed.value.retryable and not failed.value.ambiguous  # the outbox may try again
    sent = await channel.send(answer(TEXT))  # the outbox's retry
    assert len(fake.to("chat.startStream", ok=None)) == 1
    assert fake.stream_text(sent.detail) == TEXT
    again = await channel.send(answer(TEXT))  # a third try once recorded: nothing more is called
    assert again.detail == sent.detail and len(fake.to("chat.update")) == 1


async def test_a_lost_answer_to_start_stream_is_ambiguous_and_never_started_again(channel, fake):
    fake.script("chat.startStream", RESET)
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(answer(TEXT))
    assert failed.value.ambiguous and not failed.value.retryable


async def test_a_stream_slack_refuses_is_a_permanent_failure(channel, fake):
    with pytest.raises(DeliveryFailed, match="channel_not_found") as failed:
        await channel.send(answer(TEXT, reply_to={"team": TEAM, "channel": "CGONE", "thread_ts": THREAD_TS}))
    assert not failed.value.retryable and not failed.value.ambiguous


@pytest.mark.parametrize(
    "fields",
    [
        {"choices": ["yes", "no"]},  # buttons or a choice list: a plain post
        {"kind": "approval"},
        {"reply_to": {}},  # a conversation we open: no thread to stream into
    ],
)
async def test_what_does_not_stream_is_posted(channel, fake, fields):
    await channel.send(
        answer("short one", **fields) if "reply_to" not in fields else answer("short one", address="C9", **fields)
    )
    assert fake.to("chat.startStream", ok=None) == []
    assert fake.to("chat.postMessage")


def test_pieces_keep_every_character_and_respect_the_bounds():
    for text in (TEXT, "x" * 5000, "short", " ".join(["a"] * 3000)):
        pieces = _pieces(text, 100, 4)
        assert "".join(pieces) == text
        assert len(pieces) <= 5
        assert all(pieces)


def start_ts(fake: FakeSlack) -> str:
    [start] = [c for c in fake.calls if c.method == "chat.startStream"]
    return start.reply["ts"]


async def test_through_the_outbox_a_final_answer_streams_with_the_threads_steps(redis_url, prefix, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_STREAM", "true")
    async with live(redis_url, prefix, StepsAgent()) as gw:
        await gw.event(mention("steps=2", ts="1710000000.000100"), "Ev1")
        conversation = f"{TEAM}/C1/1710000000.000100"
        await eventually(lambda: gw.status_is(conversation, "done"))
        [start] = await eventually(lambda: gw.fake.to("chat.startStream"))
        assert [c["title"] for c in start["chunks"] if c["type"] == "task_update"] == ["Ran tick", "Ran tick"]
        await eventually(lambda: gw.fake.to("chat.stopStream"))
        ts = start_ts(gw.fake)
        assert gw.fake.stream_text(ts) == "done after 2 steps"
        thread = await eventually(lambda: _delivered(gw, conversation))
        [delivery] = [e for e in thread.events if e.type == "delivery"]
        assert delivery.status == "sent" and delivery.detail == ts


async def _delivered(gw, conversation: str):
    thread = await gw.thread(conversation)
    return thread if any(e.type == "delivery" for e in thread.events) else None


async def test_a_bad_stream_setting_stops_start_up_naming_it(redis_url, prefix, fake, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_STREAM_CHUNK", "10")
    settings = make_settings(
        redis_url, prefix, slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=fake.url
    )
    with pytest.raises(ConfigError, match="FRONTDESK_SLACK_STREAM_CHUNK"):
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack.channel]):
            pass


async def test_a_stream_carries_markdown_rebuilt_from_the_parse_not_the_models_text(channel, fake):
    text = "**Done** <script>x</script> [bad](javascript:alert(1)) [log](https://x.test/l) for slack:U9"
    sent = await channel.send(answer(text))
    assert fake.stream_text(sent.detail) == (
        "**Done** \\<script\\>x\\</script\\> \\[bad\\](javascript:alert(1)) [log](<https://x.test/l>) for <@U9>"
    )
