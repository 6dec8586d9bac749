"""The email channel: an SMTP server for inbound mail, a relay for outbound.

Inbound (`serve`): aiosmtpd on FRONTDESK_SMTP_HOST:PORT accepts mail for the
agents' addresses (`<agent>@<FRONTDESK_EMAIL_DOMAIN>`, routes in frontdesk.toml,
and their `+token` forms), stores the raw bytes in Redis and enqueues a message
keyed by its Message-ID before answering `250`. The worker reads the body
(`complete`). Outbound (`send`): aiosmtplib through FRONTDESK_SMTP_RELAY.

Threading: a reply's In-Reply-To and References are matched against the
Message-IDs we sent (each send binds its own), newest first; the reply token in
the address we ask people to answer (`agent+<token>@domain`, see `tokens`) is the
second key. A subject never threads anything.

The channel is always on: mail can arrive with no relay configured (`frontdesk
dev`); sending without FRONTDESK_SMTP_RELAY fails, recorded on the thread.
"""

from __future__ import annotations

import asyncio

import structlog

from channels.email import server, tokens
from channels.email.inbound import Inbound
from channels.email.outbound import Envelope, compose, relay_for
from channels.email.store import BlobStore
from gateway.errors import DeliveryFailed, Unavailable
from gateway.messages import Contact, InboundMessage, OutboundMessage, Sent
from gateway.protocols import ChannelBase, ChannelContext

log = structlog.get_logger("frontdesk.email")
NO_RELAY = "FRONTDESK_SMTP_RELAY is not set: no mail can be sent"


class EmailChannel(ChannelBase):
    name = "email"
    resend_safe = True  # receivers deduplicate by Message-ID, which a re-send keeps

    def __init__(self, context: ChannelContext) -> None:
        self.settings = context.settings
        self.inbox = context.inbox(self.name)
        self.state = context.state(self.name)
        # Raw mail and attachments have always lived under `mail:`; their refs sit in threads.
        self.blobs = BlobStore(context.state("mail"), self.settings.email_retention)
        self.inbound = Inbound(self.inbox, self.settings, self.blobs, self.token_key)
        self.relay = relay_for(self.settings)
        self.port: int | None = None  # the port `serve` listens on, once it does
        self.listening = asyncio.Event()
        self._key: bytes | None = None

    # ------------------------------------------------------------ inbound
    async def serve(self, stop: asyncio.Event) -> None:
        """Accept mail until `stop` is set."""
        srv = await server.start(self.settings, self.inbound)
        self.port = srv.sockets[0].getsockname()[1]
        self.listening.set()
        log.info("smtp listening", host=self.settings.smtp_host, port=self.port, tls=bool(self.settings.smtp_tls_cert))
        try:
            await stop.wait()
        finally:
            self.listening.clear()
            srv.close()
            await srv.wait_closed()

    async def complete(self, message: InboundMessage) -> InboundMessage | None:
        return await self.inbound.complete(message)

    # ------------------------------------------------------------ outbound
    def unreachable_reason(self, agent: str, contact: Contact) -> str | None:
        return NO_RELAY if self.relay is None else None

    async def send(self, message: OutboundMessage) -> Sent:
        if self.relay is None:
            raise DeliveryFailed(NO_RELAY)
        env = await self._envelope(message)
        mail = compose(message, env)
        await self.relay.send(mail, env)
        mid = mail["Message-ID"]
        parent = message.reply_to.get("message_id")
        references = [*message.reply_to.get("references", []), parent] if parent else []
        # The send opens (or continues) a conversation keyed by our Message-ID: replies name it.
        reply_to = {
            "message_id": mid,
            "references": references,
            "subject": str(mail["Subject"]),
            "to": env.to,
            "from": env.sender,
        }
        return Sent(detail=mid, conversation=mid, reply_to=reply_to)

    async def _envelope(self, message: OutboundMessage) -> Envelope:
        agent = message.agent or self.settings.default_agent
        sender = message.reply_to.get("from") or self._address(agent)
        to = message.reply_to.get("to") or message.address
        if "@" not in to:
            raise DeliveryFailed(f"{to!r} is not a mail address")
        token = tokens.mint(await self.token_key(), message.thread_id)
        extra = {k: [str(a) for a in message.reply_to.get(k) or []] for k in ("also_to", "cc", "bcc")}
        return Envelope(sender=sender, to=to, reply_address=tokens.with_token(sender, token), agent=agent, **extra)

    def _address(self, agent: str) -> str:
        """The agent's first configured mail address, else `<agent>@<domain>`."""
        routes = self.inbox.addresses(agent)
        return routes[0].lower() if routes else f"{agent}@{self.settings.email_domain}"

    async def token_key(self) -> bytes:
        """The reply-token key: the setting, else a random secret shared through Redis."""
        if self._key is None:
            if self.settings.email_token_secret:
                self._key = self.settings.email_token_secret.get_secret_value().encode()
            else:
                await self.state.set("token-secret", tokens.new_secret(), only_new=True)
                secret = await self.state.get("token-secret")
                if secret is None:  # evicted between the two calls
                    raise Unavailable("the reply-token secret is not in Redis")
                self._key = secret.encode()
        return self._key


def channel(context: ChannelContext) -> EmailChannel:
    return EmailChannel(context)
