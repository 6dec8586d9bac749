"""The SMS channel: Twilio's webhooks in, the Messages API out."""

from __future__ import annotations

import re
from collections.abc import Mapping

import structlog
from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import ImmutableMultiDict

from channels.sms.optout import OptOuts, keyword
from channels.twilio.media import Media, fetch_media
from channels.twilio.parts import send_once
from channels.twilio.rest import UNSUBSCRIBED, Created, TwilioRejected, TwilioRest
from channels.twilio.text import render, segments
from channels.twilio.webhook import record_status, status_callback, to_delivery, to_inbound, twiml, webhook_for
from gateway.errors import DeliveryFailed, answer
from gateway.messages import Contact, OutboundMessage, Sent
from gateway.protocols import ChannelBase, ChannelContext

log = structlog.get_logger("frontdesk.sms")
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
NO_SENDER = "no number to send from: set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"


class SmsChannel(ChannelBase):
    """Takes the phone numbers' half of POST /twilio/sms and /twilio/status; sends through Twilio's Messages API."""

    name = "sms"
    # Twilio has no idempotency key for Messages: a create repeated after a timeout
    # is a second text on the person's phone.
    resend_safe = False
    # A number's conversation never ends: a text after a finished thread starts a new one.
    fresh_after_done = True
    # A conversation is (their number, our number): an approval counts only from the pair it went on.
    decisions_where_asked = True

    def __init__(self, context: ChannelContext) -> None:
        self.settings = context.settings
        self.http = context.http
        self.inbox = context.inbox(self.name)
        self.state = context.state(self.name)
        self.rest = TwilioRest(self.settings)
        self.optouts = OptOuts(self.state)
        self.webhook = webhook_for(context)
        self.webhook.attach("", self)  # bare phone numbers; `whatsapp:` ones are WhatsApp's

    def router(self) -> APIRouter | None:
        return self.webhook.router(self)

    # ------------------------------------------------------------ inbound
    async def on_message(self, form: ImmutableMultiDict) -> Response:
        """Handle opt-out keywords, enqueue; answer with TwiML at once."""
        message = to_inbound(form)
        word = keyword(message.text)
        if word == "yes" and not await self.optouts.has(message.sender):
            word = None  # an ordinary YES, e.g. an approval
        if word is not None:
            return await self._keyword(word, message.sender)
        # A duplicate MessageSid (Twilio retried) is answered exactly like the original, and a
        # sender over the rate gets the same empty TwiML: Twilio never retries a refusal.
        answer("twilio", await self.inbox.accept(message), message)
        return twiml()

    async def _keyword(self, word: str, number: str) -> Response:
        if word == "stop":
            await self.optouts.add(number)
            log.info("opted out", number=number)
        elif word in ("start", "yes"):
            if await self.optouts.remove(number):
                log.info("opted in again", number=number)
        elif word == "help" and self.settings.sms_help_text:
            return twiml(self.settings.sms_help_text)
        # No <Message> for STOP/START: Twilio's default opt-out handling confirms
        # those itself, and blocks anything we send after a STOP (error 21610).
        return twiml()

    async def on_status(self, form: ImmutableMultiDict, query: Mapping[str, str]) -> Response:
        """A status callback becomes a `delivery` entry on the thread named in its URL."""
        if form.get("ErrorCode") == str(UNSUBSCRIBED) and form.get("To"):
            await self.optouts.add(form["To"])
        return await record_status(self.inbox, to_delivery(form, query.get("o", "")), form, query.get("t", ""))

    # ------------------------------------------------------------ outbound
    def unreachable_reason(self, agent: str, contact: Contact) -> str | None:
        """A launched thread texts first, so it needs a number to send from (a reply uses the one written to)."""
        if not E164.match(contact.address):
            return f"not an E.164 number: {contact.address!r}"
        if not (self.settings.twilio_from_number or self.settings.twilio_messaging_service_sid):
            return NO_SENDER
        return None

    async def send(self, message: OutboundMessage) -> Sent:
        """Send `message` in order, segment by segment; a retry skips the segments that went."""
        their = message.reply_to.get("to") or message.address
        ours = message.reply_to.get("from") or self.settings.twilio_from_number
        service = self.settings.twilio_messaging_service_sid
        if not E164.match(their or ""):
            raise DeliveryFailed(f"not an E.164 number: {their!r}")
        if not (ours or service):
            raise DeliveryFailed(NO_SENDER)
        if await self.optouts.has(their):
            raise DeliveryFailed("recipient opted out")
        callback = status_callback(self.settings, message)

        async def create(body: str) -> str:
            nonlocal ours
            created = await self._create(their, ours, service, body, callback)
            ours = ours or created.sender
            return created.sid

        parts = [(str(index), body) for index, body in enumerate(segments(render(message)))]
        sids = await send_once(self.state, message.id, parts, create, ttl=self.settings.dedupe_ttl)
        if not ours:
            # A Messaging Service chose the sender and Twilio did not say which yet:
            # a reply will start a new conversation.
            return Sent(detail=",".join(sids))
        # Always name the conversation: the latest thread to text a number is the one its reply resumes.
        return Sent(detail=",".join(sids), conversation=f"{their}/{ours}", reply_to={"to": their, "from": ours})

    async def _create(
        self, to: str, sender: str | None, service: str | None, body: str, callback: str | None
    ) -> Created:
        try:
            return await self.rest.create(to=to, body=body, sender=sender, service=service, status_callback=callback)
        except TwilioRejected as exc:
            if exc.code == UNSUBSCRIBED:
                await self.optouts.add(to)  # they opted out through Twilio (or a carrier)
            raise

    # ------------------------------------------------------------ media, lifecycle
    async def fetch_media(self, ref: str, max_bytes: int | None = None) -> Media:
        """The bytes of an attachment, fetched with the account's credentials, size-capped."""
        return await fetch_media(self.http, self.settings, ref, max_bytes)

    async def aclose(self) -> None:
        await self.rest.aclose()
