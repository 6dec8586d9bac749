"""The inbound SMTP server: aiosmtpd's protocol, frontdesk's policy.

aiosmtpd runs the session state machine and calls the handler's hooks; the
handler answers with reply text. It is served with `loop.create_server` in the
caller's loop (aiosmtpd's Controller would start a thread and a loop of its own).

Replies, with RFC 3463 enhanced codes:

    550 5.1.1  not one of our addresses       451 4.3.0  cannot enqueue now: retry
    552 5.3.4  over FRONTDESK_SMTP_MAX_BYTES   421 4.7.0  too many connections from the client
    550 5.6.0  unreadable message              451 4.7.1  too many messages from the client
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING

import structlog
from aiosmtpd.smtp import SMTP

from gateway import metrics
from gateway.errors import ConfigError, InboundRejected, Unavailable

if TYPE_CHECKING:
    from channels.email.inbound import Inbound
    from gateway.settings import Settings

log = structlog.get_logger("frontdesk.smtp")
ENQUEUE_TIMEOUT = 60.0  # well inside the 10 minutes a client waits after DATA (RFC 5321 §4.5.3.2.6)
# The refusals whose labels never change, bound once (prometheus_client's pattern for fixed labels).
REFUSED = {
    reason: metrics.REJECTED.labels("email", reason)
    for reason in ("rate", "unknown_recipient", "line_too_long", "connections")
}


class Limits:
    """Per-client-IP connection count and message rate (a token bucket), in this process.

    Counted per replica, like Postfix's anvil counts per host; the defaults are
    Postfix's too: 50 connections, no rate limit.
    """

    def __init__(self, connections: int, per_minute: int) -> None:
        self.connections = connections
        self.per_minute = per_minute
        self.open: dict[str, int] = {}
        self.buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)

    def connect(self, host: str) -> str | None:
        """Count a new connection; the refusal to give, if over the limit."""
        if self.open.get(host, 0) >= self.connections:
            return "421 4.7.0 Too many connections from your host, try again later"
        self.open[host] = self.open.get(host, 0) + 1
        return None

    def disconnect(self, host: str) -> None:
        left = self.open.get(host, 1) - 1
        if left > 0:
            self.open[host] = left
        else:
            self.open.pop(host, None)

    def message(self, host: str) -> str | None:
        """Take one message from the host's bucket; the refusal to give when it is empty."""
        if not self.per_minute:
            return None
        now = time.monotonic()
        tokens, at = self.buckets.get(host, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60)
        if tokens < 1:
            self.buckets[host] = (tokens, now)
            return "451 4.7.1 Too many messages from your host, slow down"
        self.buckets[host] = (tokens - 1, now)
        if len(self.buckets) > 10_000:  # forget hosts whose bucket has refilled
            self.buckets = {h: b for h, b in self.buckets.items() if b[0] < self.per_minute - 1}
        return None


class Handler:
    """aiosmtpd hooks: who may send to whom, and what happens to an accepted message."""

    def __init__(self, inbound: Inbound, limits: Limits) -> None:
        self.inbound = inbound
        self.limits = limits

    async def handle_MAIL(self, server, session, envelope, address: str, mail_options: list[str]) -> str:
        refusal = self.limits.message(_host(session.peer))
        if refusal:
            REFUSED["rate"].inc()
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:
        if self.inbound.agent_for(address) is None:
            REFUSED["unknown_recipient"].inc()
            return f"550 5.1.1 <{address}>: no such recipient here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        try:
            async with asyncio.timeout(ENQUEUE_TIMEOUT):
                return await self.inbound.receive(
                    envelope.mail_from or "", envelope.rcpt_tos, envelope.original_content or b"", _host(session.peer)
                )
        except InboundRejected as exc:
            metrics.REJECTED.labels("email", type(exc).__name__.lower()).inc()
            log.info("mail refused", reason=str(exc), peer=_host(session.peer))
            return f"{exc.smtp_reply}: {_one_line(str(exc))}" if str(exc) else exc.smtp_reply
        except (Unavailable, TimeoutError) as exc:
            # Nothing is lost: the client keeps the message and tries again.
            log.warning("mail not enqueued; asked to retry", error=str(exc) or type(exc).__name__)
            return Unavailable.smtp_reply
        except Exception:
            log.exception("mail not enqueued")
            return Unavailable.smtp_reply


class Connection(SMTP):
    """One SMTP connection: aiosmtpd's session, plus the connection limit and our wording for oversize mail."""

    def __init__(self, handler: Handler, **kw) -> None:
        super().__init__(handler, **kw)
        self.limits = handler.limits
        self._unterminated = 0  # bytes received since the last line feed

    def data_received(self, data: bytes) -> None:
        # aiosmtpd (1.4.6, smtp_DATA) keeps every piece of a line that has no CRLF yet,
        # past data_size_limit too: one endless line would grow this process without
        # bound until the timeout. Such a line can never be accepted, so hang up on it.
        newline = data.rfind(b"\n")
        self._unterminated = len(data) - newline - 1 if newline >= 0 else self._unterminated + len(data)
        if (
            self.data_size_limit
            and self._unterminated > self.data_size_limit
            and isinstance(self.transport, asyncio.WriteTransport)
        ):
            REFUSED["line_too_long"].inc()
            self.transport.write(b"552 5.3.4 Line longer than the message size limit\r\n")
            self.transport.close()
            return
        super().data_received(data)

    # Kept reach-in (aiosmtpd<1.5 in pyproject): the one place a session can answer 421 before the
    # greeting. Guarded by tests/channels/test_email_server.py::test_connections_per_client_are_limited_with_421.
    async def _handle_client(self) -> None:
        # Refuse before the greeting (RFC 5321 §3.8 allows a 421 in its place).
        assert self.session is not None  # made in connection_made, before the client is handled
        host = _host(self.session.peer)
        refusal = self.limits.connect(host)
        if refusal:
            REFUSED["connections"].inc()
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            self.limits.disconnect(host)

    async def push(self, status) -> None:
        # aiosmtpd enforces data_size_limit itself, with replies that lack RFC 3463 codes.
        if isinstance(status, str) and status.startswith("552 Error"):
            status = f"552 5.3.4 Message too big (the limit is {self.data_size_limit} bytes)"
        await super().push(status)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's STARTTLS context when a certificate and key are configured."""
    if not (settings.smtp_tls_cert and settings.smtp_tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(settings.smtp_tls_cert), str(settings.smtp_tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"FRONTDESK_SMTP_TLS_CERT/FRONTDESK_SMTP_TLS_KEY: cannot load {settings.smtp_tls_cert}: {exc}"
        ) from None
    return context


async def start(
    settings: Settings, inbound: Inbound, host: str | None = None, port: int | None = None
) -> asyncio.Server:
    """Listen on FRONTDESK_SMTP_HOST:PORT (or the given ones) in the running loop."""
    loop = asyncio.get_running_loop()
    if settings.log_level.lower() != "debug":
        # aiosmtpd logs every command of every session at INFO; our own lines say what matters.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler = Handler(inbound, Limits(settings.smtp_client_connections, settings.smtp_client_rate))
    context = tls_context(settings)

    def connection() -> Connection:
        return Connection(
            handler,
            data_size_limit=settings.smtp_max_bytes,
            enable_SMTPUTF8=True,
            hostname=settings.email_domain,  # aiosmtpd's default asks DNS (getfqdn) per connection
            # Closes a session idle this long between commands, or this long in DATA: a client that
            # connects and sends nothing (or a byte at a time) cannot hold a connection slot.
            timeout=settings.smtp_timeout,
            ident="frontdesk",
            tls_context=context,
            loop=loop,
        )

    host, port = host or settings.smtp_host, settings.smtp_port if port is None else port
    try:
        return await loop.create_server(connection, host, port)
    except OSError as exc:
        raise ConfigError(f"FRONTDESK_SMTP_HOST/FRONTDESK_SMTP_PORT: cannot listen on {host}:{port}: {exc}") from None


def _host(peer) -> str:
    return peer[0] if isinstance(peer, (tuple, list)) and peer else str(peer)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200].encode("ascii", "replace").decode()
