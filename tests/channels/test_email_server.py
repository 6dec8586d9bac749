"""Real SMTP sessions (smtplib) against the channel's server, on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import smtplib
import ssl
from pathlib import Path

import pytest
import trustme
from helpers import eventually, make_settings
from plugins import EchoAgent

import channels.email as email_channel
from gateway import metrics
from gateway.errors import ConfigError
from gateway.runtime import running

MAIL = Path(__file__).parent / "mail"
TO = "echo@frontdesk.localhost"


def crlf(data: bytes) -> bytes:
    """Mail on the wire ends its lines with CRLF (smtplib leaves bytes as they are)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def corpus(name: str) -> bytes:
    return crlf((MAIL / name).read_bytes())


def message(mid: str, text: str = "hello", sender: str = "alice@example.com", extra: str = "") -> bytes:
    return crlf(f"From: Alice <{sender}>\nTo: {TO}\nSubject: hi\nMessage-ID: <{mid}>\n{extra}\n{text}\n".encode())


def session(
    port: int,
    raw: bytes,
    *,
    mail_from: str = "alice@example.com",
    rcpts=(TO,),
    tls: ssl.SSLContext | None = None,
    size: int | None = None,
) -> dict:
    """One SMTP transaction, recording each reply (smtplib, blocking: run it in a thread)."""
    out: dict = {"rcpt": []}
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as client:
        client.ehlo()
        out["ehlo"] = client.esmtp_features
        if tls is not None:
            out["starttls"] = client.starttls(context=tls)
            client.ehlo()
        out["mail"] = client.mail(mail_from, [f"SIZE={size}"] if size else [])
        if out["mail"][0] != 250:
            return out
        out["rcpt"] = [client.rcpt(r) for r in rcpts]
        if any(code == 250 for code, _ in out["rcpt"]):
            try:
                out["data"] = client.data(raw)
            except smtplib.SMTPDataError as exc:
                out["data"] = (exc.smtp_code, exc.smtp_error)
    return out


async def smtp(port: int, raw: bytes, **kw) -> dict:
    return await asyncio.to_thread(session, port, raw, **kw)


@contextlib.asynccontextmanager
async def serving(settings, **kw):
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel], **kw) as rt:
        channel = rt.channels["email"]
        stop = asyncio.Event()
        task = asyncio.create_task(channel.serve(stop))
        await asyncio.wait_for(channel.listening.wait(), 10)
        try:
            yield rt, channel
        finally:
            stop.set()
            await task


@pytest.fixture
def mail_settings(redis_url, prefix):
    return make_settings(redis_url, prefix, smtp_port=0)


@pytest.fixture
async def server(mail_settings):
    async with serving(mail_settings) as pair:
        yield pair


async def entries(rt) -> list[dict]:
    rows = await rt.redis.xrange(rt.keys.inbound(0))
    return [json.loads(fields["d"]) for _, fields in rows if fields.get("k") == "inbound"]


async def test_accepted_mail_is_on_the_stream_when_250_is_sent(server):
    rt, channel = server
    reply = await smtp(channel.port, message("m1@example.com", "hello there"))
    assert reply["data"][0] == 250
    # No polling: the 250 promises the entry exists already.
    [entry] = await entries(rt)
    assert entry["id"] == "<m1@example.com>"
    assert entry["sender"] == "alice@example.com"
    assert entry["address"] == TO
    assert entry["conversation"] == "<m1@example.com>"
    assert entry["reply_to"]["to"] == "alice@example.com" and entry["reply_to"]["from"] == TO
    assert await channel.blobs.get(entry["data"]["raw"]) == message("m1@example.com", "hello there")


async def test_unknown_recipient_gets_550_5_1_1(server):
    rt, channel = server
    reply = await smtp(
        channel.port, message("m2@example.com"), rcpts=["nobody@frontdesk.localhost", "echo@elsewhere.example"]
    )
    assert [code for code, _ in reply["rcpt"]] == [550, 550]
    assert reply["rcpt"][0][1].startswith(b"5.1.1")
    assert "data" not in reply
    assert await entries(rt) == []


async def test_plus_addressing_is_accepted_where_the_address_is(server):
    rt, channel = server
    reply = await smtp(
        channel.port,
        message("m3@example.com"),
        rcpts=["echo+anything@frontdesk.localhost", "nobody+x@frontdesk.localhost"],
    )
    assert [code for code, _ in reply["rcpt"]] == [250, 550]
    assert reply["data"][0] == 250
    [entry] = await entries(rt)
    assert entry["address"] == TO  # our address without the plus part


async def test_a_retried_message_id_is_enqueued_once(server):
    rt, channel = server
    for _ in range(2):
        reply = await smtp(channel.port, message("dup@example.com"))
        assert reply["data"][0] == 250
    assert len(await entries(rt)) == 1


async def test_oversize_mail_gets_552_5_3_4(redis_url, prefix):
    settings = make_settings(redis_url, prefix, smtp_port=0, smtp_max_bytes=4096)
    async with serving(settings) as (rt, channel):
        big = message("big@example.com", "x" * 900 + "\n" + ("y" * 900 + "\n") * 10)
        declared = await smtp(channel.port, big, size=len(big))
        assert declared["mail"][0] == 552 and declared["mail"][1].startswith(b"5.3.4")
        undeclared = await smtp(channel.port, big)
        assert undeclared["data"][0] == 552 and undeclared["data"][1].startswith(b"5.3.4")
        assert await entries(rt) == []
        assert (await smtp(channel.port, message("small@example.com")))["data"][0] == 250


@pytest.mark.parametrize(
    "name, reason", [("auto_reply.eml", "auto_submitted"), ("bounce.eml", "bounce"), ("list_mail.eml", "precedence")]
)
async def test_automatic_mail_is_accepted_counted_and_not_enqueued(server, name, reason):
    rt, channel = server
    before = metrics.LOOPS_AVOIDED.labels("email", reason)._value.get()
    mail_from = "<>" if name == "bounce.eml" else "robot@example.com"
    reply = await smtp(channel.port, corpus(name), mail_from=mail_from)
    assert reply["data"][0] == 250
    assert await entries(rt) == []
    assert metrics.LOOPS_AVOIDED.labels("email", reason)._value.get() == before + 1


async def test_mail_from_our_own_address_is_not_answered(server):
    rt, channel = server
    reply = await smtp(channel.port, message("own@example.com", sender=TO), mail_from=TO)
    assert reply["data"][0] == 250
    assert await entries(rt) == []


@pytest.mark.parametrize(
    "name",
    [
        "malformed_headers.eml",
        "eight_bit_headers.eml",
        "shift_jis_base64.eml",
        "nested_multipart.eml",
        "gmail_reply.eml",
        "outlook_reply.eml",
    ],
)
async def test_the_corpus_is_accepted(server, name):
    rt, channel = server
    reply = await smtp(channel.port, corpus(name))
    assert reply["data"][0] == 250
    [entry] = await entries(rt)
    assert entry["sender"]


async def test_huge_header_block_is_accepted(server):
    rt, channel = server
    refs = "\n".join(f" <r{i}@example.com>" for i in range(3000))
    received = "".join(
        f"Received: from hop{i}.example.com by hop{i + 1}.example.com; Mon, 3 Jun 2024 10:00:00 +0000\n"
        for i in range(3000)
    )
    raw = crlf(f"{received}References:{refs}\n".encode()) + message("huge@example.com")
    reply = await smtp(channel.port, raw)
    assert reply["data"][0] == 250
    [entry] = await entries(rt)
    assert len(entry["reply_to"]["references"]) == 30


async def test_a_line_over_the_smtp_limit_is_refused_with_a_reason(server):
    rt, channel = server
    reply = await smtp(channel.port, message("long@example.com", "z" * 5000))
    assert reply["data"][0] == 500 and b"too long" in reply["data"][1].lower()
    assert await entries(rt) == []


async def test_redis_down_gets_451_and_nothing_is_lost(mail_settings):
    async with serving(mail_settings, redis_url="redis://127.0.0.1:1/0") as (rt, channel):
        reply = await smtp(channel.port, message("later@example.com"))
    assert reply["data"][0] == 451 and reply["data"][1].startswith(b"4.3.0")


async def test_connections_per_client_are_limited_with_421(redis_url, prefix):
    settings = make_settings(redis_url, prefix, smtp_port=0, smtp_client_connections=1)
    async with serving(settings) as (rt, channel):
        first = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", channel.port, "client.test", 20)
        try:
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", channel.port, "client.test", 20)
            assert refused.value.smtp_code == 421
        finally:
            await asyncio.to_thread(first.quit)

        # The slot is free again once the first connection is gone.
        async def admitted() -> bool:
            return (await smtp(channel.port, message("after@example.com"))).get("data", (0,))[0] == 250

        await eventually(admitted)


async def test_message_rate_per_client_gets_451_4_7_1(redis_url, prefix):
    settings = make_settings(redis_url, prefix, smtp_port=0, smtp_client_rate=1)
    async with serving(settings) as (rt, channel):
        assert (await smtp(channel.port, message("r1@example.com")))["data"][0] == 250
        reply = await smtp(channel.port, message("r2@example.com"))
        assert reply["mail"][0] == 451 and reply["mail"][1].startswith(b"4.7.1")
        assert len(await entries(rt)) == 1


async def test_starttls_with_a_configured_certificate(redis_url, prefix, tmp_path):
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
    settings = make_settings(redis_url, prefix, smtp_port=0, smtp_tls_cert=pem, smtp_tls_key=pem)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    async with serving(settings) as (rt, channel):
        reply = await smtp(channel.port, message("tls@example.com"), tls=client_tls)
        assert "starttls" in reply["ehlo"]
        assert reply["starttls"][0] == 220
        assert reply["data"][0] == 250
        assert len(await entries(rt)) == 1


async def test_no_starttls_without_a_certificate(server):
    rt, channel = server
    reply = await smtp(channel.port, message("plain@example.com"))
    assert "starttls" not in reply["ehlo"]
    assert "size" in reply["ehlo"]


async def test_one_message_to_two_agents_starts_a_thread_with_each(redis_url, prefix):
    settings = make_settings(redis_url, prefix, smtp_port=0)
    other = EchoAgent()
    other.name = "other"
    async with running(settings, agents=[EchoAgent(), other], builtins=False, channels=[email_channel.channel]) as rt:
        channel = rt.channels["email"]
        stop = asyncio.Event()
        task = asyncio.create_task(channel.serve(stop))
        await asyncio.wait_for(channel.listening.wait(), 10)
        try:
            reply = await smtp(channel.port, message("both@example.com"), rcpts=[TO, "other@frontdesk.localhost"])
            assert reply["data"][0] == 250
            found = await entries(rt)
            assert sorted(e["address"] for e in found) == [TO, "other@frontdesk.localhost"]
            assert len({e["conversation"] for e in found}) == 2
        finally:
            stop.set()
            await task


async def test_a_port_in_use_is_a_config_error_naming_the_setting(server, redis_url, prefix):
    rt, channel = server
    settings = make_settings(redis_url, prefix, smtp_port=channel.port)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel]) as other:
        with pytest.raises(ConfigError, match="FRONTDESK_SMTP_PORT"):
            await other.channels["email"].serve(asyncio.Event())
