"""SMTP sessions that abuse the server: each is closed cleanly and in bounded time, and others are served.

FRONTDESK_SMTP_TIMEOUT is set low here (1 s); the polls below only bound a
broken test (30 s) and measure nothing. Clients are raw sockets, so they can
misbehave in ways smtplib will not.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib

import pytest
from helpers import make_settings
from plugins import EchoAgent
from prometheus_client import REGISTRY
from seckit import smtp_serving

import channels.email as email_channel
from gateway.runtime import running
from gateway.settings import Settings

TO = "echo@frontdesk.localhost"
CAP = 4096
BOUND = 30.0  # seconds: a broken server fails the test here instead of hanging it


class Raw:
    """An SMTP client on a bare socket: it says exactly what it is told, when it is told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.greeting = b""

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        raw = cls(reader, writer)
        raw.greeting = await reader.readline()
        return raw

    async def command(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reader.readline()

    async def start_data(self) -> None:
        for line, code in (
            (b"EHLO client.test", b"250"),
            (b"MAIL FROM:<mallory@example.net>", b"250"),
            (f"RCPT TO:<{TO}>".encode(), b"250"),
            (b"DATA", b"354"),
        ):
            self.writer.write(line + b"\r\n")
            await self.writer.drain()
            reply = await self.reader.readline()
            while reply[3:4] == b"-":  # a multi-line EHLO answer
                reply = await self.reader.readline()
            assert reply.startswith(code), (line, reply)

    async def until_closed(self) -> bytes:
        """Everything the server says until it closes the connection."""
        try:
            return await asyncio.wait_for(self.reader.read(), BOUND)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    async def trickle(self, piece: bytes, every: float = 0.2) -> int:
        """Send `piece` again and again until the server hangs up; how many went."""
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOUND
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while not self.reader.at_eof() and loop.time() < deadline:
                self.writer.write(piece)
                await self.writer.drain()
                sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.reader.read(1 << 16), every)
        assert loop.time() < deadline, "the server never hung up"
        return sent

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def mail(redis_url, prefix):
    settings = make_settings(
        redis_url, prefix, smtp_port=0, smtp_timeout=1.0, smtp_max_bytes=CAP, smtp_client_connections=20
    )
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel]) as rt:
        async with smtp_serving(rt) as port:
            yield rt, port


def _deliver(port: int, mid: str) -> tuple[int, bytes]:
    raw = f"From: Alice <alice@example.com>\r\nTo: {TO}\r\nSubject: hi\r\nMessage-ID: <{mid}>\r\n\r\nhello\r\n".encode()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as client:
        client.ehlo()
        client.mail("alice@example.com")
        client.rcpt(TO)
        return client.data(raw)


def _cut_lines() -> float:
    return (
        REGISTRY.get_sample_value("frontdesk_inbound_rejected_total", {"channel": "email", "reason": "line_too_long"})
        or 0.0
    )


async def _enqueued(rt) -> list[str]:
    return [fields.get("d", "") for _, fields in await rt.redis.xrange(rt.keys.inbound(0))]


async def test_idle_and_trickling_clients_are_hung_up_on_while_others_are_served(mail):
    rt, port = mail
    idle = await Raw.open(port)  # connects and says nothing
    crawl = await Raw.open(port)  # a command one byte at a time, never finished
    slow_data = await Raw.open(port)
    await slow_data.start_data()  # a message body one line at a time, never finished
    try:
        hung_up = asyncio.gather(idle.until_closed(), crawl.trickle(b"N"), slow_data.trickle(b"x\r\n"))
        # Meanwhile a well-behaved client delivers a message.
        code, _ = await asyncio.to_thread(_deliver, port, "fine-1@example.com")
        assert code == 250 and len(await _enqueued(rt)) == 1
        said_idle, _, _ = await hung_up
        assert idle.greeting.startswith(b"220") and said_idle == b""  # closed without a word
        assert len(await _enqueued(rt)) == 1  # the unfinished message went nowhere
    finally:
        for client in (idle, crawl, slow_data):
            client.close()


async def test_pipelined_garbage_gets_errors_then_a_goodbye(mail):
    rt, port = mail
    raw = await Raw.open(port)
    try:
        binary = b"".join(b"\x00\xff\xfeBOGUS%d \x80\r\n" % i for i in range(20))
        unknown = b"".join(b"XYZZY%d\r\n" % i for i in range(10))
        garbage = b"EHLO x\r\n" + binary + b"A" * 5000 + b"\r\nMAIL FROM:<a@b>\r\n" * 3 + unknown + b"QUIT\r\n"
        raw.writer.write(garbage)
        await raw.writer.drain()
        said = await raw.until_closed()
    finally:
        raw.close()
    replies = [line for line in said.split(b"\r\n") if line]
    assert all(line[:3].isdigit() for line in replies), replies
    assert b"500 Error: bad syntax" in replies and b"500 Command line too long" in replies
    # The fifth unknown command ends the session; the rest of the pipeline is never read.
    assert replies[-1] == b"502 5.5.1 Too many unrecognized commands, goodbye."
    code, _ = await asyncio.to_thread(_deliver, port, "fine-2@example.com")
    assert code == 250


async def test_a_header_block_over_the_cap_is_refused_and_the_session_goes_on(mail):
    rt, port = mail
    raw = await Raw.open(port)
    try:
        await raw.start_data()
        headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 70) for i in range(CAP // 70 + 20))
        raw.writer.write(b"From: m@example.net\r\n" + headers + b"\r\nbody\r\n.\r\n")
        await raw.writer.drain()
        reply = await asyncio.wait_for(raw.reader.readline(), BOUND)
        assert reply.startswith(b"552 5.3.4"), reply
        assert (await raw.command(b"RSET")).startswith(b"250")
        assert (await raw.command(b"QUIT")).startswith(b"221")
    finally:
        raw.close()
    assert await _enqueued(rt) == []


async def test_an_endless_header_is_cut_off_at_the_cap(mail):
    rt, port = mail
    line = await Raw.open(port)  # one header line that never ends
    stream = await Raw.open(port)  # header lines that never end
    try:
        await line.start_data()
        await stream.start_data()
        cut_before = _cut_lines()
        await line.trickle(b"X-Endless: " + b"a" * 1024, every=0.01)
        # Hung up on for the line, not by the timeout: aiosmtpd alone would have kept it all in memory.
        assert _cut_lines() == cut_before + 1
        await stream.trickle(b"X-More: " + b"a" * 60 + b"\r\n", every=0.01)  # cut by the timeout
    finally:
        line.close()
        stream.close()
    assert await _enqueued(rt) == []
    code, _ = await asyncio.to_thread(_deliver, port, "fine-3@example.com")
    assert code == 250


def test_the_timeout_is_a_setting_with_a_sane_default(monkeypatch):
    assert Settings(_env_file=None).smtp_timeout == 60.0  # aiosmtpd's own default is 300 s
    monkeypatch.setenv("FRONTDESK_SMTP_TIMEOUT", "15")
    assert Settings(_env_file=None).smtp_timeout == 15.0
