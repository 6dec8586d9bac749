"""The WhatsApp channel: Twilio's webhooks in (shared with SMS), the Messages API out, inside the 24-hour window."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import structlog
from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import ImmutableMultiDict

from channels.twilio.media import Media, fetch_media
from channels.twilio.parts import forget, send_once
from channels.twilio.rest import TwilioRejected, TwilioRest
from channels.twilio.text import render, segments
from channels.twilio.webhook import record_status, status_callback, to_delivery, to_inbound, twiml, webhook_for
from channels.whatsapp.settings import WHATSAPP, WhatsAppSettings
from channels.whatsapp.window import SessionWindow
from gateway.errors import DeliveryFailed, answer
from gateway.messages import Contact, InboundMessage, OutboundMessage, Sent
from gateway.protocols import ChannelBase, ChannelContext
from gateway.settings import plugin_settings

log = structlog.get_logger("frontdesk.whatsapp")
OUTSIDE_WINDOW = 63016  # "Outside messaging window. For WhatsApp, use a Message Template instead"
NO_SENDER = "no WhatsApp sender to write from: set TWILIO_WHATSAPP_FROM"
# WhatsApp refuses a template whose text, variables filled in, is over 1,024 characters
# (Twilio error 63021), and a variable holding a newline, a tab or more than four spaces in a
# row. The text goes into `{{1}}` on one line, cut to leave the template's own words room.
TEMPLATE_TEXT_MAX = 800
_WHITESPACE = re.compile(r"\s+")


class WhatsAppChannel(ChannelBase):
    """Takes the `whatsapp:` half of POST /twilio/sms and /twilio/status; sends free text or a template."""

    name = "whatsapp"
    # No idempotency key on Twilio's Messages: a create repeated after a timeout is a second message.
    resend_safe = False
    # A sender's chat with a user never ends: a message after a finished thread starts a new one.
    fresh_after_done = True
    # A conversation is (their address, our sender): an approval counts only from the pair it went on.
    decisions_where_asked = True

    def __init__(self, context: ChannelContext, own: WhatsAppSettings | None = None) -> None:
        self.settings = context.settings
        self.own = own or plugin_settings(WhatsAppSettings, context.settings)
        self.http = context.http
        self.inbox = context.inbox(self.name)
        self.state = context.state(self.name)
        self.window = SessionWindow(self.state)
        self.rest = TwilioRest(self.settings)
        self.webhook = webhook_for(context)
        self.webhook.attach("whatsapp", self)

    def router(self) -> APIRouter | None:
        return self.webhook.router(self)

    # ------------------------------------------------------------ inbound
    async def on_message(self, form: ImmutableMultiDict) -> Response:
        """Enqueue, answer with TwiML at once; the window is recorded off the request path (`complete`)."""
        message = to_whatsapp(form)
        # frontdesk.toml names our senders as plain numbers, as for SMS: `whatsapp = ["+15550001111"]`.
        agent = self.inbox.route(message.address.removeprefix("whatsapp:"))
        answer("twilio", await self.inbox.accept(message, agent=agent), message)
        return twiml()

    async def complete(self, message: InboundMessage) -> InboundMessage:
        """Run by the worker, once per accepted message and before any reply to it: it (re)opens the window.

        Here rather than on the webhook: a second Redis write there cost about 40 % more per
        request (in-process, 660 against 930 µs); a duplicate MessageSid never gets here.
        """
        await self.window.opened(message.sender, message.address, at=message.received_at.timestamp())
        return message

    async def on_status(self, form: ImmutableMultiDict, query: Mapping[str, str]) -> Response:
        """A status callback becomes a `delivery` entry; 63016 closes the window and says what to do."""
        outbound_id, why = query.get("o", ""), None
        if form.get("ErrorCode") == str(OUTSIDE_WINDOW):
            # Twilio took the free text and failed it later: the window had closed without our knowing.
            their, ours = form.get("To", ""), form.get("From", "")
            await self.window.close(their, ours)
            if outbound_id:
                await forget(self.state, outbound_id)  # a re-send of it sends it again (as a template)
            why = (
                "outside WhatsApp's 24-hour window, where free text is refused; until they write again,"
                " messages go as templates (FRONTDESK_WHATSAPP_TEMPLATE[_<KIND>])"
            )
        event = to_delivery(form, outbound_id, self.name, why)
        return await record_status(self.inbox, event, form, query.get("t", ""))

    # ------------------------------------------------------------ outbound
    def unreachable_reason(self, agent: str, contact: Contact) -> str | None:
        """A launched thread writes first, so it needs a sender (a reply goes from the one written to)."""
        if not WHATSAPP.match(contact.address):
            return f"not a WhatsApp address: {contact.address!r} (the form is whatsapp:+15551230001)"
        return None if self.own.from_number else NO_SENDER

    async def send(self, message: OutboundMessage) -> Sent:
        """Free text inside the window with them, else the kind's template; else a DeliveryFailed saying why."""
        their = message.reply_to.get("to") or message.address
        ours = message.reply_to.get("from") or self.own.from_number
        if not WHATSAPP.match(their or ""):
            raise DeliveryFailed(f"not a WhatsApp address: {their!r}")
        if not ours:
            raise DeliveryFailed(NO_SENDER)
        sent = Sent(conversation=f"{their}/{ours}", reply_to={"to": their, "from": ours})
        callback = status_callback(self.settings, message)
        closed = "no message from them in the last 24 hours"
        if await self.window.is_open(their, ours):
            try:
                sent.detail = await self._free_text(message, their, ours, callback)
                return sent
            except TwilioRejected as exc:
                if exc.code != OUTSIDE_WINDOW:
                    raise
                await self.window.close(their, ours)  # Twilio knows better: on to the template
                closed = f"Twilio refused free text with error {OUTSIDE_WINDOW}"
        sent.detail = await self._template(message, their, ours, callback, closed)
        return sent

    async def _free_text(self, message: OutboundMessage, their: str, ours: str, callback: str | None) -> str:
        """Send `message` as text in numbered segments; a retry sends only those Twilio has not taken."""

        async def create(body: str) -> str:
            created = await self.rest.create(to=their, sender=ours, service=None, status_callback=callback, body=body)
            return created.sid

        parts = [(str(i), body) for i, body in enumerate(segments(render(message)))]
        return ",".join(await send_once(self.state, message.id, parts, create, ttl=self._ttl))

    async def _template(
        self, message: OutboundMessage, their: str, ours: str, callback: str | None, closed: str
    ) -> str:
        """Send `message` as its kind's template; with none set, a DeliveryFailed naming the setting (nothing sent)."""
        template = self.own.template_for(message)
        if template is None:
            raise DeliveryFailed(
                f"not sent: outside WhatsApp's 24-hour window with {their} ({closed}), where only an approved"
                f" template may be sent, and no template is set for {message.kind} messages:"
                f" set FRONTDESK_WHATSAPP_TEMPLATE_{message.kind.upper()} or FRONTDESK_WHATSAPP_TEMPLATE"
            )

        async def create(variables: str) -> str:
            created = await self.rest.create(
                to=their,
                sender=ours,
                service=None,
                status_callback=callback,
                content_sid=template,
                content_variables=variables,
            )
            return created.sid

        parts = [("template", template_variables(message))]
        sids = await send_once(self.state, message.id, parts, create, ttl=self._ttl)
        log.info("sent as a template", to=their, template=template, kind=message.kind)
        return ",".join(sids)

    @property
    def _ttl(self) -> int:
        return self.settings.dedupe_ttl

    # ------------------------------------------------------------ media, lifecycle
    async def fetch_media(self, ref: str, max_bytes: int | None = None) -> Media:
        """The bytes of an attachment, fetched with the account's credentials, size-capped."""
        return await fetch_media(self.http, self.settings, ref, max_bytes)

    async def aclose(self) -> None:
        await self.rest.aclose()


def to_whatsapp(form: ImmutableMultiDict) -> InboundMessage:
    """An incoming WhatsApp message: the SMS form plus WhatsApp's own fields.

    A tapped quick-reply button arrives as `ButtonText` (the Body is its text too on most
    senders); `ProfileName` is the name the user gave WhatsApp, kept as `data` for the agent.
    """
    message = to_inbound(form, "whatsapp")
    update: dict = {}
    if not message.text and form.get("ButtonText"):
        update["text"] = form["ButtonText"]
    if form.get("ProfileName"):
        update["data"] = {"profile_name": form["ProfileName"]}
    return message.model_copy(update=update) if update else message


def template_variables(message: OutboundMessage) -> str:
    """ContentVariables for a template: `{{1}}` is the message as plain text on one line, cut to fit."""
    text = _WHITESPACE.sub(" ", render(message)).strip()
    if len(text) > TEMPLATE_TEXT_MAX:
        text = text[: TEMPLATE_TEXT_MAX - 1].rstrip() + "…"
    return json.dumps({"1": text}, ensure_ascii=False)
