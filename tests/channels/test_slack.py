"""The Slack channel: mrkdwn, parsing, the signed inbound route, sends against a fake Slack, Socket Mode."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from fake_slack import (
    APP_TOKEN,
    BOT_ID,
    BOT_USER,
    HANG,
    SECRET,
    TEAM,
    TOKEN,
    FakeSlack,
    Reply,
    click,
    event_body,
    mention,
    message,
    signed,
)
from helpers import eventually, make_settings
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from plugins import EchoAgent
from slack_app import outbound

import channels.slack as slack
from channels.slack.api import Me
from channels.slack.inbound import from_click, from_event
from channels.slack.mrkdwn import LIMIT, MARKDOWN_LIMIT, markdown_block, split, to_mrkdwn
from gateway.errors import DeliveryFailed
from gateway.events import OutAction
from gateway.runtime import running
from gateway.web.app import create_app

ME = Me(team=TEAM, user_id=BOT_USER, bot_id=BOT_ID)


@pytest.fixture
async def fake():
    async with FakeSlack() as fake:
        yield fake


def slack_settings(redis_url: str, prefix: str, fake: FakeSlack, **overrides):
    values = dict(slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_api_url=fake.url, default_agent="echo")
    values.update(overrides)
    return make_settings(redis_url, prefix, **values)


@pytest.fixture
async def rt(redis_url, prefix, fake):
    async with running(
        slack_settings(redis_url, prefix, fake), agents=[EchoAgent()], builtins=False, channels=[slack.channel]
    ) as rt:
        yield rt


@pytest.fixture
async def rt_without_uploads(redis_url, prefix, fake, monkeypatch):
    """The channel with uploads off, so a text past a markdown block's 12,000 characters goes in mrkdwn parts."""
    monkeypatch.setenv("FRONTDESK_SLACK_UPLOAD_OVER", "0")
    async with running(
        slack_settings(redis_url, prefix, fake), agents=[EchoAgent()], builtins=False, channels=[slack.channel]
    ) as rt:
        yield rt


@pytest.fixture
async def http(rt):
    transport = httpx.ASGITransport(app=create_app(rt.settings, rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk.test") as client:
        yield client


async def post_event(http: httpx.AsyncClient, body: dict, **signing) -> httpx.Response:
    raw = json.dumps(body)
    headers = signing.pop("headers", {})
    return await http.post("/slack/events", content=raw, headers={**signed(raw, **signing), **headers})


async def inbound_count(rt) -> int:
    return await rt.redis.xlen(rt.keys.inbound(0))


# ---------------------------------------------------------------- mrkdwn


def test_markdown_becomes_mrkdwn():
    md = "# Plan\nSome **bold**, *italic*, ~~old~~ and `a<b` see [docs](https://x.test/?a=1&b=2) for <@U9>.\n- one\n> a **quote**"
    assert to_mrkdwn(md).splitlines() == [
        "*Plan*",
        "Some *bold*, _italic_, ~old~ and `a&lt;b` see <https://x.test/?a=1&b=2|docs> for <@U9>.",
        "• one",
        "> a *quote*",
    ]


MRKDWN = [
    ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
    ("***both*** and **_nested_ bold**", "_*both*_ and *_nested_ bold*"),
    ("## A **bold** heading", "*A bold heading*"),  # no `*` inside the bold line to end it early
    ("[a | b](https://x.test/p?q=<1>)", "<https://x.test/p?q=%3C1%3E|a ∣ b>"),
    ("<https://x.test/a&b>", "<https://x.test/a&b>"),
    ("<someone@x.test>", "<mailto:someone@x.test>"),
    ("![chart](https://x.test/c.png)", "<https://x.test/c.png|chart>"),
    ("1. one\n2. two\n   - inner\n- [ ] box", "1. one\n2. two\n   • inner\n• [ ] box"),
    ("> one\n>\n> two", "> one\n>\n> two"),
    ("above\n\n---\n\nbelow", "above\n\n――――――――\n\nbelow"),
    ("| a | b |\n|---|---|\n| 1 | 2 |", "a | b\n1 | 2"),
    ("<@U9> <#C1> <!here> slack:U9", "<@U9> <#C1> <!here> slack:U9"),  # Slack's own syntax kept
    # Hostile or broken input: shown as written (escaped), never half-parsed.
    ("**unclosed bold and `unclosed code", "**unclosed bold and `unclosed code"),
    ("<b>html</b> <script>x()</script>", "&lt;b&gt;html&lt;/b&gt; &lt;script&gt;x()&lt;/script&gt;"),
    ("[click](javascript:alert(1))", "[click](javascript:alert(1))"),
    ("<javascript:alert(1)>", "&lt;javascript:alert(1)&gt;"),
    ("[x](data:text/html,<b>)", "[x](data:text/html,&lt;b&gt;)"),
    ("<https://x.test|fake label>", "&lt;https://x.test|fake label&gt;"),  # no mrkdwn link smuggled in
    ("```\nunclosed < fence", "```\nunclosed &lt; fence\n```"),
]


@pytest.mark.parametrize("markdown, mrkdwn", MRKDWN, ids=[m[:30] for m, _ in MRKDWN])
def test_markdown_as_mrkdwn(markdown, mrkdwn):
    assert to_mrkdwn(markdown) == mrkdwn


def test_very_long_hostile_markdown_keeps_its_text_in_parts():
    md = "- " * 40 + "deep\n" + "**x " * 3000 + "[" * 3000 + "<b>"
    parts = split(to_mrkdwn(md))
    assert len(parts) > 1 and all(len(p) <= LIMIT for p in parts)
    joined = "".join(parts)
    assert "deep" in joined and joined.count("x") == 3000 and joined.endswith("&lt;b&gt;")


@pytest.mark.parametrize(
    "markdown, block",
    [
        ("just a line with **bold**", False),  # mrkdwn shows it all
        ("- flat\n- list", False),
        ("# Heading\ntext", True),
        ("- outer\n  - inner", True),
        ("word " * 700, True),  # more than one mrkdwn part
        ("# Heading\n" + "word " * 2500, False),  # past the block's 12,000 characters: mrkdwn parts
        ("# For <@U9>\ntext", False),  # a mention is mrkdwn syntax
    ],
    ids=["line", "flat-list", "heading", "nested-list", "long", "too-long", "mention"],
)
def test_the_markdown_block_is_used_where_mrkdwn_loses_something(markdown, block):
    parts = split(to_mrkdwn(markdown))
    found = markdown_block(markdown, parts=len(parts))
    assert (found is not None) == block
    if found:
        assert found["type"] == "markdown" and 0 < len(found["text"]) <= MARKDOWN_LIMIT


def test_the_markdown_block_is_markdown_rebuilt_from_the_parse():
    md = "# Plan\n- a [doc](https://x.test/d)\n  - <script>x</script> [bad](javascript:alert(1)) **ok**"
    block = markdown_block(md, parts=1)
    assert block == {
        "type": "markdown",
        "text": "# Plan\n- a [doc](<https://x.test/d>)\n  - \\<script\\>x\\</script\\> "
        "\\[bad\\](javascript:alert(1)) **ok**",
    }


def test_code_blocks_keep_their_text_but_not_their_language_tag():
    assert to_mrkdwn("```python\nif a < b and **c**:\n```") == "```\nif a &lt; b and **c**:\n```"


def test_split_keeps_each_part_under_the_limit_and_reopens_code():
    text = to_mrkdwn("intro\n```\n" + "\n".join(f"line {i} " + "x" * 60 for i in range(200)) + "\n```\nafter")
    parts = split(text, 1000)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= 1000
        assert part.count("```") % 2 == 0  # every part renders its code block whole
    assert parts[0].startswith("intro") and parts[-1].endswith("after")


@hsettings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab &<>\n*_`")), max_size=900), st.integers(min_value=40, max_value=300))
def test_split_never_exceeds_the_limit_nor_loses_text(text, limit):
    parts = split(text, limit)
    assert all(0 < len(p) <= limit for p in parts)
    squeeze = lambda s: re.sub(r"\s", "", s)  # noqa: E731 - cuts happen only at whitespace or inside words
    assert squeeze("".join(parts)) == squeeze(text)


# ---------------------------------------------------------------- parsing


def test_a_mention_starts_a_thread_keyed_by_its_own_ts():
    parsed = from_event(event_body(mention("help me", ts="100.000001"), "Ev1"), ME)
    m = parsed.message
    assert parsed.start and m.id == "Ev1" and m.text == "help me" and m.sender == "U1"
    assert m.conversation == f"{TEAM}/C1/100.000001" and m.address == f"{TEAM}/C1"
    assert m.reply_to == {"team": TEAM, "channel": "C1", "thread_ts": "100.000001"}


def test_a_mention_inside_a_thread_uses_the_thread():
    parsed = from_event(event_body(mention("again", ts="100.000009", thread_ts="100.000001"), "Ev2"), ME)
    assert parsed.message.conversation == f"{TEAM}/C1/100.000001"


def test_a_dm_is_its_own_conversation():
    parsed = from_event(event_body(message("hi", ts="5.1", channel="D1"), "Ev3"), ME)
    assert parsed.start and parsed.message.conversation == f"{TEAM}/D1" and parsed.prefer is None
    threaded = from_event(event_body(message("hi", ts="5.2", channel="D1", thread_ts="5.0"), "Ev4"), ME)
    assert threaded.message.conversation == f"{TEAM}/D1" and threaded.prefer == f"{TEAM}/D1/5.0"


def test_a_plain_thread_reply_only_resumes():
    parsed = from_event(event_body(message("yes", ts="100.2", thread_ts="100.1"), "Ev5"), ME)
    assert not parsed.start and parsed.live_only


@pytest.mark.parametrize(
    "event",
    [
        message("root chatter", ts="1.1"),
        message("from a bot", ts="1.2", thread_ts="1.0", bot_id="B77"),
        message("ours", ts="1.3", thread_ts="1.0", user=BOT_USER),
        message("", ts="1.4", thread_ts="1.0", subtype="message_changed"),
        message("", ts="1.5", thread_ts="1.0", subtype="message_deleted"),
        message("joined", ts="1.6", subtype="channel_join"),
        message(f"<@{BOT_USER}> the message copy of a mention", ts="1.7", thread_ts="1.0"),
        {"type": "reaction_added", "user": "U1", "item": {}},
    ],
)
def test_events_that_never_start_or_resume(event):
    assert from_event(event_body(event, "EvX"), ME) is None


def test_a_file_share_is_a_message_with_attachments():
    files = [
        {
            "id": "F1",
            "name": "log.txt",
            "mimetype": "text/plain",
            "size": 12,
            "url_private": "https://files.slack.test/F1",
        }
    ]
    parsed = from_event(
        event_body(message("see log", ts="2.0", channel="D1", subtype="file_share", files=files), "Ev6"), ME
    )
    assert parsed.message.attachments[0].filename == "log.txt"
    assert parsed.message.attachments[0].ref == "https://files.slack.test/F1"


def test_a_click_is_a_decision_on_the_thread_of_its_message():
    from urllib.parse import parse_qs

    raw = click(
        user="U2",
        channel="C1",
        message_ts="100.5",
        thread_ts="100.1",
        value='{"call_id": "c1", "approved": true}',
        approved=True,
        action_ts="9.9",
    )
    parsed = from_click(json.loads(parse_qs(raw)["payload"][0]), ME)
    m = parsed.message
    assert not parsed.start and m.decision.call_id == "c1" and m.decision.approved
    assert m.conversation == f"{TEAM}/C1/100.1" and m.id == "9.9:U2:100.5" and m.sender == "U2"


# ---------------------------------------------------------------- enabling


async def test_the_channel_needs_a_bot_token_and_a_secret_or_app_token(redis_url, prefix, fake):
    async with running(make_settings(redis_url, prefix), builtins=False, channels=[slack.channel]) as rt:
        assert "slack" not in rt.channels and rt.unconfigured == {"slack": "SLACK_BOT_TOKEN is not set"}
    settings = make_settings(redis_url, prefix, slack_bot_token=TOKEN)
    async with running(settings, builtins=False, channels=[slack.channel]) as rt:
        assert "slack" not in rt.channels and "SLACK_SIGNING_SECRET" in rt.unconfigured["slack"]
    settings = make_settings(
        redis_url, prefix, slack_bot_token=TOKEN, slack_app_token=APP_TOKEN, slack_api_url=fake.url
    )
    async with running(settings, builtins=False, channels=[slack.channel]) as rt:
        assert rt.channels["slack"].router() is None  # Socket Mode only: nothing can verify HTTP requests


# ---------------------------------------------------------------- the inbound route


async def test_url_verification_is_answered(http):
    r = await post_event(http, {"token": "legacy", "challenge": "c-123", "type": "url_verification"})
    assert r.status_code == 200 and r.json() == {"challenge": "c-123"}


async def test_a_mention_is_enqueued_and_acknowledged_with_a_reaction(http, rt, fake):
    r = await post_event(http, event_body(mention("hello", ts="100.000001"), "Ev1"))
    assert r.status_code == 200
    assert await inbound_count(rt) == 1
    assert await rt.ingest.thread_for("slack", f"{TEAM}/C1/100.000001")
    reactions = await eventually(lambda: fake.to("reactions.add"))
    assert reactions == [{"channel": "C1", "timestamp": "100.000001", "name": "eyes"}]


@pytest.mark.parametrize(
    "signing", [{"secret": "not-the-secret"}, {"timestamp": 1_000_000_000}], ids=["forged", "stale"]
)
async def test_bad_signatures_are_refused_and_nothing_is_enqueued(http, rt, fake, signing):
    r = await post_event(http, event_body(mention("hello", ts="100.000001"), "Ev1"), **signing)
    assert r.status_code == 401
    assert await inbound_count(rt) == 0
    assert fake.to("reactions.add", ok=None) == []


async def test_a_missing_signature_is_refused(http, rt):
    r = await http.post(
        "/slack/events",
        content=json.dumps(event_body(mention("x", ts="1.1"), "Ev1")),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 401
    assert await inbound_count(rt) == 0


async def test_slack_retries_and_repeated_event_ids_are_dropped(http, rt, fake):
    body = event_body(mention("hello", ts="100.000001"), "EvSame")
    assert (await post_event(http, body)).status_code == 200
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert (await post_event(http, body, headers=retry)).status_code == 200
    assert (await post_event(http, body)).status_code == 200
    assert await inbound_count(rt) == 1
    await eventually(lambda: fake.to("reactions.add"))
    assert len(fake.to("reactions.add", ok=None)) == 1


@pytest.mark.parametrize(
    "event",
    [
        message("from our bot", ts="1.2", channel="D1", bot_id=BOT_ID),
        message("our bot user", ts="1.3", channel="D1", user=BOT_USER),
        message("", ts="1.4", channel="D1", subtype="message_changed", message={"text": "edited"}),
        message("chatter at the root", ts="1.5"),
        message("a reply in a thread we do not know", ts="1.6", thread_ts="1.0"),
    ],
    ids=["bot_id", "own-user", "message_changed", "root-chatter", "unknown-thread"],
)
async def test_events_that_must_not_be_enqueued_get_200_and_nothing_else(http, rt, fake, event):
    r = await post_event(http, event_body(event, "EvIgnored"))
    assert r.status_code == 200
    assert await inbound_count(rt) == 0
    assert fake.to("reactions.add", ok=None) == []


async def test_an_unreadable_body_is_400(http, rt):
    raw = '{"type": "event_callback",'
    r = await http.post("/slack/events", content=raw, headers=signed(raw))
    assert r.status_code == 400
    assert await inbound_count(rt) == 0


async def test_auth_test_failing_is_503_so_slack_retries(http, rt, fake):
    fake.script("auth.test", Reply(status=500, body={"ok": False, "error": "internal_error"}))
    body = event_body(mention("hello", ts="100.000001"), "Ev1")
    r = await post_event(http, body)
    assert r.status_code == 503 and r.headers["retry-after"]
    assert await inbound_count(rt) == 0
    assert (await post_event(http, body, headers={"X-Slack-Retry-Num": "1"})).status_code == 200
    assert await inbound_count(rt) == 1


async def test_the_reaction_can_be_turned_off(redis_url, prefix, fake):
    settings = slack_settings(redis_url, prefix, fake, slack_ack_reaction="")
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack.channel]) as rt:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, rt)), base_url="http://t"
        ) as http:
            assert (await post_event(http, event_body(mention("hi", ts="3.1"), "Ev1"))).status_code == 200
            assert await inbound_count(rt) == 1
    assert fake.to("reactions.add", ok=None) == []


# ---------------------------------------------------------------- sending


async def test_a_reply_is_posted_in_its_thread_as_mrkdwn(rt, fake):
    sent = await rt.channels["slack"].send(outbound("**done**: see [it](https://x.test)"))
    [post] = fake.posts()
    assert post == {
        "channel": "C1",
        "thread_ts": "1700000000.000100",
        "text": "*done*: see <https://x.test|it>",
        "metadata": {"event_type": "frontdesk_outbound", "event_payload": {"outbound_id": "th_x-1", "part": 0}},
    }
    assert sent.detail and sent.conversation is None


@pytest.mark.parametrize(
    "reply_to", [{"channel": "C1"}, {"channel": "C1", "thread_ts": "undefined"}, {"channel": "C1", "thread_ts": ""}]
)
async def test_without_a_valid_thread_ts_nothing_is_posted(rt, fake, reply_to):
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["slack"].send(outbound(reply_to=reply_to))
    assert not failed.value.retryable and not failed.value.ambiguous
    assert fake.to("chat.postMessage", ok=None) == []


@pytest.mark.parametrize(
    "reply, retryable, ambiguous, retry_after",
    [
        (Reply(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "7"}), True, False, 7.0),
        (Reply(status=503, body={"ok": False, "error": "service_unavailable"}), True, False, None),
        (Reply(status=200, body={"ok": False, "error": "channel_not_found"}), False, False, None),
        (Reply(status=200, body={"ok": False, "error": "not_in_channel"}), False, False, None),
        (Reply(status=200, body={"ok": False, "error": "invalid_auth"}), False, False, None),
    ],
    ids=["429", "503", "channel_not_found", "not_in_channel", "invalid_auth"],
)
async def test_slack_errors_become_delivery_failures(rt, fake, reply, retryable, ambiguous, retry_after):
    fake.script("chat.postMessage", reply)
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["slack"].send(outbound())
    exc = failed.value
    assert (exc.retryable, exc.ambiguous, exc.retry_after) == (retryable, ambiguous, retry_after)
    assert len(fake.to("chat.postMessage", ok=None)) == 1  # the SDK never retried on its own


async def test_no_answer_and_no_way_to_look_it_up_is_ambiguous_and_not_repeated(redis_url, prefix, fake):
    # Losing the answer is tests/channels/test_slack_exactly_once.py; here Slack cannot be asked either.
    settings = slack_settings(redis_url, prefix, fake, slack_timeout=0.5)
    async with running(settings, builtins=False, channels=[slack.channel]) as rt:
        fake.script("chat.postMessage", HANG)
        fake.script("conversations.replies", Reply(status=503, body={"ok": False, "error": "service_unavailable"}))
        with pytest.raises(DeliveryFailed) as failed:
            await rt.channels["slack"].send(outbound())
    assert failed.value.ambiguous and not failed.value.retryable
    assert len(fake.to("chat.postMessage", ok=None)) == 1


async def test_slack_unreachable_is_retryable(redis_url, prefix, fake):
    async with FakeSlack() as gone:
        url = gone.url
    async with running(
        slack_settings(redis_url, prefix, fake, slack_api_url=url), builtins=False, channels=[slack.channel]
    ) as rt:
        with pytest.raises(DeliveryFailed) as failed:
            await rt.channels["slack"].send(outbound())
    assert failed.value.retryable and not failed.value.ambiguous


async def test_a_contact_user_gets_a_dm_that_opens_the_conversation(rt, fake):
    sent = await rt.channels["slack"].send(outbound("Can you check?", address="U9", reply_to={}))
    assert fake.to("conversations.open") == [{"users": "U9"}]
    [post] = fake.posts(channel="D9")
    assert "thread_ts" not in post  # a new conversation: the one case a root post is right
    assert sent.conversation == f"{TEAM}/D9/{sent.detail}"
    assert sent.reply_to == {"team": TEAM, "channel": "D9", "thread_ts": sent.detail}
    # A reply at the DM's root finds the thread too.
    assert await rt.ingest.thread_for("slack", f"{TEAM}/D9") == "th_x"


async def test_a_contact_channel_gets_a_root_post_that_becomes_the_thread(rt, fake):
    sent = await rt.channels["slack"].send(outbound("Anyone?", address=f"{TEAM}/C9", reply_to={}))
    [post] = fake.posts(channel="C9")
    assert "thread_ts" not in post and fake.to("conversations.open") == []
    assert sent.conversation == f"{TEAM}/C9/{sent.detail}"


async def test_a_long_message_goes_in_parts_in_the_thread(rt_without_uploads, fake):
    rt = rt_without_uploads
    text = "\n\n".join(f"Paragraph {i}: " + "words " * 150 for i in range(20))  # past a markdown block
    await rt.channels["slack"].send(outbound(text))
    posts = fake.posts()
    assert len(posts) > 1
    assert all(p["thread_ts"] == "1700000000.000100" and len(p["text"]) <= LIMIT for p in posts)
    assert re.sub(r"\s", "", "".join(p["text"] for p in posts)) == re.sub(r"\s", "", text)


async def test_a_retry_after_a_429_mid_message_posts_only_the_rest(rt_without_uploads, fake):
    rt = rt_without_uploads
    text = "\n\n".join(f"Paragraph {i}: " + "words " * 150 for i in range(20))  # past a markdown block
    channel = rt.channels["slack"]
    await channel.send(outbound(text, id="th_x-9"))
    expected = [p["text"] for p in fake.posts()]
    fake.calls.clear()
    accepted = Reply(body={"ok": True, "ts": "1700009999.000100"})
    fake.script(
        "chat.postMessage",
        accepted,
        Reply(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}),
    )
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(outbound(text, id="th_x-10"))
    assert failed.value.retryable and failed.value.retry_after == 1.0
    await channel.send(outbound(text, id="th_x-10"))
    assert [p["text"] for p in fake.to("chat.postMessage")] == expected  # each part once
    assert len(fake.to("chat.postMessage", ok=None)) == len(expected) + 1  # and the one refused


async def test_a_structured_text_goes_as_a_markdown_block_with_mrkdwn_as_its_text(rt, fake):
    md = "# Result\n- checked\n  - **all** green\n\nSee [the log](https://x.test/l?a=1&b=2)."
    sent = await rt.channels["slack"].send(outbound(md, kind="final"))
    [post] = fake.posts()
    assert post["blocks"] == [
        {
            "type": "markdown",
            "text": "# Result\n- checked\n  - **all** green\n\nSee [the log](<https://x.test/l?a=1&b=2>).",
        }
    ]
    assert post["text"] == "*Result*\n• checked\n  • *all* green\n\nSee <https://x.test/l?a=1&b=2|the log>."
    assert sent.detail and sent.conversation is None


async def test_a_long_text_within_12000_characters_is_one_markdown_post(rt, fake):
    text = "\n\n".join(f"Paragraph {i}: " + "words " * 150 for i in range(8))
    await rt.channels["slack"].send(outbound(text))
    [post] = fake.posts()
    assert len(post["text"]) <= LIMIT and post["text"].startswith("Paragraph 0")
    [block] = post["blocks"]
    assert block["type"] == "markdown" and re.sub(r"\s", "", block["text"]) == re.sub(r"\s", "", text)
    assert fake.to("chat.postMessage", ok=False) == []


async def test_a_markdown_block_to_a_contact_opens_the_conversation(rt, fake):
    sent = await rt.channels["slack"].send(outbound("# Hello\nfrom us", address=f"{TEAM}/C9", reply_to={}))
    [post] = fake.posts(channel="C9")
    assert "thread_ts" not in post and post["blocks"][0]["type"] == "markdown"
    assert sent.conversation == f"{TEAM}/C9/{sent.detail}"


async def test_the_fake_refuses_blocks_past_slacks_limits(rt, fake):
    api = rt.channels["slack"].outbound.api
    for blocks in (
        [{"type": "markdown", "text": "x" * 6001}, {"type": "markdown", "text": "y" * 6000}],
        [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
        [{"type": "rich_text_unknown"}],
    ):
        with pytest.raises(DeliveryFailed, match="invalid_blocks") as failed:
            await api.call("chat.postMessage", posts=True, channel="C1", text="t", blocks=blocks)
        assert not failed.value.retryable
    assert fake.posts() == []


async def test_an_approval_carries_approve_and_deny_buttons(rt, fake):
    actions = [
        OutAction(call_id="call-1", label="Approve", approved=True),
        OutAction(call_id="call-1", label="Deny", approved=False),
    ]
    await rt.channels["slack"].send(
        outbound("Approval needed: deploy(version='1.2')", kind="approval", actions=actions)
    )
    [post] = fake.posts()
    section, buttons = post["blocks"]
    assert section["text"]["text"] == "Approval needed: deploy(version='1.2')"
    assert [(b["action_id"], json.loads(b["value"])) for b in buttons["elements"]] == [
        ("frontdesk_approve", {"call_id": "call-1", "approved": True}),
        ("frontdesk_deny", {"call_id": "call-1", "approved": False}),
    ]


async def test_a_receipt_updates_the_approval_message(rt, fake):
    sent = await rt.channels["slack"].send(
        outbound("Approved by slack:U1 at 2030-01-01 10:00 UTC", kind="receipt", updates="1700000005.000100")
    )
    [update] = fake.to("chat.update")
    assert update["ts"] == "1700000005.000100" and update["channel"] == "C1"
    assert update["text"] == "Approved by <@U1> at 2030-01-01 10:00 UTC"
    assert "actions" not in json.dumps(update["blocks"])
    assert sent.detail == "1700000005.000100" and fake.to("chat.postMessage", ok=None) == []


async def test_a_notice_is_ephemeral_to_its_person_in_the_thread(rt, fake):
    await rt.channels["slack"].send(outbound("Sorry — not yours to answer.", kind="notice", address="U2"))
    assert fake.to("chat.postEphemeral") == [
        {"channel": "C1", "user": "U2", "text": "Sorry — not yours to answer.", "thread_ts": "1700000000.000100"}
    ]
    assert fake.to("chat.postMessage", ok=None) == []


async def test_a_notice_that_cannot_be_ephemeral_goes_by_dm(rt, fake):
    fake.script("chat.postEphemeral", Reply(body={"ok": False, "error": "user_not_in_channel"}))
    await rt.channels["slack"].send(outbound("Sorry.", kind="notice", address="U2"))
    assert fake.posts(channel="D2")[0]["text"] == "Sorry."


# ---------------------------------------------------------------- Socket Mode


async def test_socket_mode_events_go_through_the_same_listeners(redis_url, prefix, fake):
    settings = slack_settings(redis_url, prefix, fake, slack_app_token=APP_TOKEN, slack_signing_secret=None)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack.channel]) as rt:
        channel = rt.channels["slack"]
        stop = asyncio.Event()
        serving = asyncio.create_task(channel.serve(stop))
        try:
            await eventually(lambda: fake.to("apps.connections.open"))
            envelope = await fake.send_envelope(event_body(mention("over the socket", ts="200.000001"), "EvSock"))
            await eventually(lambda: any(a.get("envelope_id") == envelope for a in fake.socket_acks))
            ignored = await fake.send_envelope(
                event_body(message("bot", ts="200.2", channel="D1", bot_id="B9"), "EvBot")
            )
            await eventually(lambda: any(a.get("envelope_id") == ignored for a in fake.socket_acks))
        finally:
            stop.set()
            await asyncio.wait_for(serving, timeout=15)
        assert await inbound_count(rt) == 1
        assert await rt.ingest.thread_for("slack", f"{TEAM}/C1/200.000001")
        await eventually(lambda: fake.to("reactions.add"))


# ---------------------------------------------------------------- the app manifest


def test_the_manifest_asks_for_what_the_channel_uses():
    from pathlib import Path

    import yaml

    manifest = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/slack/manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {
        "app_mentions:read",
        "chat:write",
        "im:history",
        "im:write",
        "reactions:write",
        "channels:history",
    } <= scopes
    settings = manifest["settings"]
    assert {"app_mention", "message.im", "message.channels", "message.groups"} <= set(
        settings["event_subscriptions"]["bot_events"]
    )
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings["interactivity"] == {
        "is_enabled": True,
        "request_url": settings["event_subscriptions"]["request_url"],
    }
    assert settings["socket_mode_enabled"] is False
