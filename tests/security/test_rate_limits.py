"""Per-sender rate limits: one mechanism in the accept script, answered per channel.

Over FRONTDESK_RATE_LIMIT messages in FRONTDESK_RATE_WINDOW seconds from one
(channel, sender), nothing is enqueued and the channel answers as its sender
expects: a webhook 429 with Retry-After, SMTP 451 4.7.1 (the MTA retries later),
Slack and Twilio 200 (they retry anything else) with the drop counted.
"""

from __future__ import annotations

import asyncio
import smtplib

import redis.asyncio as aioredis
from fake_slack import mention, message
from helpers import eventually
from plugins import EchoAgent
from prometheus_client import REGISTRY
from redis.asyncio.connection import Connection
from seckit import OUR_NUMBER, smtp_serving, stack

from gateway.events import InboundMessage
from gateway.runtime import running
from gateway.store.ingest import Ingest
from gateway.store.keys import Keys

THEM, OTHER = "+15551230001", "+15551230002"


def _dropped(channel: str) -> float:
    return (
        REGISTRY.get_sample_value("frontdesk_inbound_rejected_total", {"channel": channel, "reason": "rate_limited"})
        or 0.0
    )


def said(i: int, sender: str = "ann", conversation: str = "c1") -> InboundMessage:
    return InboundMessage(id=f"m{i}-{sender}", channel="rec", conversation=conversation, sender=sender, text=f"hi {i}")


async def test_the_accept_script_counts_per_sender_and_window(settings):
    async with running(
        settings.model_copy(update={"rate_limit": 3, "rate_window": 2}), agents=[EchoAgent()], builtins=False
    ) as rt:
        stream = rt.keys.inbound(0)
        first = [await rt.ingest.accept(said(i, conversation=f"c{i}"), "echo") for i in range(3)]
        assert not any(a.limited for a in first)
        before, dropped = await rt.redis.xlen(stream), _dropped("rec")
        over = await rt.ingest.accept(said(3), "echo")
        assert over.limited and 1 <= over.retry_after <= 2 and not over.thread_id
        assert await rt.redis.xlen(stream) == before and _dropped("rec") == dropped + 1
        # A provider's retry of an accepted message is answered as before, never counted or refused.
        again = await rt.ingest.accept(said(0, conversation="c0"), "echo")
        assert again.duplicate and again.thread_id == first[0].thread_id
        # Someone else is not slowed down by ann.
        assert not (await rt.ingest.accept(said(9, sender="bob"), "echo")).limited

        # The window ends and ann may write again.
        async def accepted() -> bool:
            return not (await rt.ingest.accept(said(int(asyncio.get_running_loop().time() * 1000)), "echo")).limited

        await eventually(accepted, timeout=10, interval=0.2)


def _spread(keys: Keys, n: int, sender: str = "ann") -> list[InboundMessage]:
    """`n` messages of one sender in conversations that fall in `n` different partitions (n <= partitions)."""
    found: dict[int, InboundMessage] = {}
    for i in range(1000):
        found.setdefault(keys.conversation_partition("rec", f"s{i}"), said(i, sender, f"s{i}"))
        if len(found) == n:
            return list(found.values())
    raise AssertionError("no spread of conversations found")


async def test_the_limit_is_per_sender_across_partitions(settings):
    """A sender writing in conversations of four partitions gets the limit once, not four times."""
    settings = settings.model_copy(update={"rate_limit": 3, "rate_window": 60, "partitions": 4})
    async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
        messages = _spread(rt.keys, 4)
        assert len({rt.keys.conversation_partition("rec", m.conversation) for m in messages}) == 4
        outcomes = [await rt.ingest.accept(m, "echo") for m in messages]
        assert [a.limited for a in outcomes] == [False, False, False, True]
        more = _spread(rt.keys, 4)  # the same conversations again, new messages
        more = [m.model_copy(update={"id": f"{m.id}-again"}) for m in more]
        assert all([(await rt.ingest.accept(m, "echo")).limited for m in more])
        entries = sum([await rt.redis.xlen(rt.keys.inbound(p)) for p in range(4)])
        assert entries == 3


async def test_the_window_slides_retry_after_is_when_the_oldest_message_leaves_it(settings):
    """Two messages taken 50 s ago and one now, limit 3 per 60 s: the next may come in about 10 s, not 60."""
    async with running(
        settings.model_copy(update={"rate_limit": 3, "rate_window": 60}), agents=[EchoAgent()], builtins=False
    ) as rt:
        seconds, micros = await rt.redis.time()
        now_ms = seconds * 1000 + micros // 1000
        await rt.redis.zadd(rt.keys.rate("rec", "ann"), {"earlier-1": now_ms - 50_000, "earlier-2": now_ms - 49_000})
        assert not (await rt.ingest.accept(said(1), "echo")).limited
        over = await rt.ingest.accept(said(2), "echo")
        assert over.limited and 5 <= over.retry_after <= 11
        # A message taken more than a window ago no longer counts at all.
        await rt.redis.zadd(rt.keys.rate("rec", "bob"), {f"old-{i}": now_ms - 61_000 for i in range(3)})
        assert not (await rt.ingest.accept(said(3, sender="bob"), "echo")).limited
        assert await rt.redis.zrange(rt.keys.rate("rec", "bob"), 0, -1) == ["m3-bob"]


async def test_a_limit_of_zero_turns_it_off(settings):
    async with running(settings.model_copy(update={"rate_limit": 0}), agents=[EchoAgent()], builtins=False) as rt:
        assert not any([(await rt.ingest.accept(said(i, conversation=f"z{i}"), "echo")).limited for i in range(50)])
        assert await rt.redis.keys(f"{settings.key_prefix}:*rate*") == []


class _Counting(Connection):
    """A redis-py connection that counts the round trips it makes (commands or pipelines sent)."""

    sent = 0

    async def send_packed_command(self, command, check_health=True):
        type(self).sent += 1
        return await super().send_packed_command(command, check_health)


async def test_accepting_a_message_is_still_one_round_trip(redis_url, prefix):
    pool = aioredis.ConnectionPool.from_url(redis_url, decode_responses=True, connection_class=_Counting)
    client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it
    try:
        ingest = Ingest(client, Keys(prefix, 4), dedupe_ttl=60, rate_limit=30, rate_window=60)
        await ingest.accept(said(0), "echo")  # the first call also loads the script
        for i in range(1, 6):
            _Counting.sent = 0
            accepted = await ingest.accept(said(i, conversation=f"rt{i}"), "echo")
            assert _Counting.sent == 1 and not accepted.limited
    finally:
        await client.aclose()


async def test_webhooks_get_429_with_retry_after(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path, rate_limit=2, rate_window=60) as s:
        cb = "http://127.0.0.1:9/hook"
        ok = [await s.webhook("echo", {"text": f"hi {i}", "callback_url": cb}, f"msg_rl{i}") for i in range(2)]
        assert [r.status_code for r in ok] == [202, 202]
        over = await s.webhook("echo", {"text": "one more", "callback_url": cb}, "msg_rl2")
        assert over.status_code == 429 and 1 <= int(over.headers["retry-after"]) <= 60
        # The caller's retry of an accepted webhook is still answered like the original.
        again = await s.webhook("echo", {"text": "hi 0", "callback_url": cb}, "msg_rl0")
        assert again.status_code == 202 and again.json() == {"thread_id": ok[0].json()["thread_id"], "duplicate": True}
        # Another caller (another callback identity) is not affected.
        assert (await s.webhook("echo", {"text": "hi", "callback_url": "http://127.0.0.1:9/other"})).status_code == 202


async def test_sms_over_the_limit_gets_200_and_is_dropped_and_counted(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path, rate_limit=2, rate_window=60) as s:
        stream = s.rt.keys.inbound(0)
        assert [(await s.sms(THEM, f"hi {i}")).status_code for i in range(2)] == [200, 200]
        before, dropped = await s.rt.redis.xlen(stream), _dropped("sms")
        over = await s.sms(THEM, "one more")
        # Twilio retries (or falls back) on an error answer: a 200 with empty TwiML ends it here.
        assert over.status_code == 200 and over.text.endswith("<Response />")
        assert await s.rt.redis.xlen(stream) == before and _dropped("sms") == dropped + 1
        # STOP is honoured even over the limit: opt-outs never wait.
        assert (await s.sms(THEM, "STOP")).status_code == 200
        assert await s.rt.channels["sms"].optouts.has(THEM)
        assert (await s.sms(OTHER, "hello", to=OUR_NUMBER)).status_code == 200
        assert await s.rt.redis.xlen(stream) == before + 1


async def test_slack_over_the_limit_gets_200_no_reaction_and_is_counted(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path, rate_limit=2, rate_window=60, slack_ack_reaction="eyes") as s:
        stream = s.rt.keys.inbound(0)
        for i in range(2):
            r = await s.slack_event(mention(f"hi {i}", ts=f"171000000{i}.000100"))
            assert r.status_code == 200
        await eventually(lambda: len(s.slack.to("reactions.add")) == 2)
        before, dropped = await s.rt.redis.xlen(stream), _dropped("slack")
        # Slack retries a non-200 up to three times and disables an app that keeps failing.
        r = await s.slack_event(message("more", ts="1710000009.000100", channel="D1"))
        assert r.status_code == 200
        assert await s.rt.redis.xlen(stream) == before and _dropped("slack") == dropped + 1
        r = await s.slack_event(mention("from someone else", ts="1710000010.000100", user="U2"))
        assert r.status_code == 200 and await s.rt.redis.xlen(stream) == before + 1
        await eventually(lambda: len(s.slack.to("reactions.add")) == 3)
        assert [a["timestamp"] for a in s.slack.to("reactions.add")] == [
            "1710000000.000100",
            "1710000001.000100",
            "1710000010.000100",
        ]


def _mail(port: int, mid: str, sender: str = "alice@example.com") -> tuple[int, bytes]:
    raw = f"From: <{sender}>\r\nTo: echo@frontdesk.localhost\r\nSubject: hi\r\nMessage-ID: <{mid}>\r\n\r\nhello\r\n".encode()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as client:
        client.ehlo()
        client.mail(sender)
        client.rcpt("echo@frontdesk.localhost")
        try:
            return client.data(raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


async def test_mail_over_the_limit_gets_451_4_7_1_and_is_taken_when_retried_later(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path, rate_limit=2, rate_window=3) as s, smtp_serving(s.rt) as port:
        for i in range(2):
            assert (await asyncio.to_thread(_mail, port, f"rl{i}@example.com"))[0] == 250
        code, text = await asyncio.to_thread(_mail, port, "rl2@example.com")
        assert code == 451 and text.startswith(b"4.7.1")
        assert (await asyncio.to_thread(_mail, port, "bob1@example.com", "bob@example.com"))[0] == 250

        # The sending MTA keeps the message and tries again; after the window it goes through.
        async def delivered() -> bool:
            return (await asyncio.to_thread(_mail, port, "rl2@example.com"))[0] == 250

        await eventually(delivered, timeout=15, interval=0.3)
        assert await s.rt.ingest.thread_for("email", "<rl2@example.com>")
