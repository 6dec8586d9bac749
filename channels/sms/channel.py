"""The SMS channel: Twilio's webhooks in, the Messages API out."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from twilio.request_validator import RequestValidator

from channels.sms.inbound import to_delivery, to_inbound, twiml, verified_form
from channels.sms.media import Media, fetch_media
from channels.sms.optout import OptOuts, keyword
from channels.sms.rest import UNSUBSCRIBED, Created, TwilioRejected, TwilioRest
from channels.sms.text import render, segments
from gateway.entries import Entry
from gateway.errors import DeliveryFailed, UnknownAgent
from gateway.events import OutboundMessage
from gateway.registry import Sent

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = structlog.get_logger("frontdesk.sms")
E164 = re.compile(r"^\+[1-9]\d{1,14}$")


class SmsChannel:
    """Answers POST /twilio/sms and /twilio/status; sends through Twilio's Messages API."""

    name = "sms"
    # Twilio has no idempotency key for Messages: a create repeated after a timeout
    # is a second text on the person's phone.
    resend_safe = False
    # A number's conversation never ends: a text after a finished thread starts a new one.
    fresh_after_done = True

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.validator = RequestValidator(self.settings.twilio_auth_token.get_secret_value())
        self.rest = TwilioRest(self.settings)
        self.optouts = OptOuts(runtime.redis, runtime.keys)

    def router(self) -> APIRouter:
        router = APIRouter(tags=["twilio"])
        router.add_api_route(
            "/twilio/sms", self.on_message, methods=["POST"], summary="Incoming SMS/MMS (Twilio webhook)"
        )
        router.add_api_route(
            "/twilio/status", self.on_status, methods=["POST"], summary="Message status callback (Twilio)"
        )
        return router

    # ------------------------------------------------------------ inbound
    async def on_message(self, request: Request) -> Response:
        """Verify, handle opt-out keywords, enqueue; answer with TwiML at once."""
        message = to_inbound(await verified_form(request, self.settings, self.validator))
        word = keyword(message.text)
        if word == "yes" and not await self.optouts.has(message.sender):
            word = None  # an ordinary YES, e.g. an approval
        if word is not None:
            return await self._keyword(word, message.sender)
        agent = self.rt.router.route("sms", message.address)
        if agent is None:
            raise UnknownAgent(f"no agent answers SMS to {message.address}")
        # A duplicate MessageSid (Twilio retried) is answered exactly like the original.
        await self.rt.ingest.accept(message, agent)
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

    async def on_status(self, request: Request) -> Response:
        """A status callback becomes a `delivery` entry on the thread named in its URL."""
        form = await verified_form(request, self.settings, self.validator)
        if form.get("ErrorCode") == str(UNSUBSCRIBED) and form.get("To"):
            await self.optouts.add(form["To"])
        thread_id = request.query_params.get("t", "")
        event = to_delivery(form, request.query_params.get("o", ""))
        if event is None or not thread_id or not await self.rt.store.exists(thread_id):
            return Response(status_code=204)  # nothing to record, or the thread is gone
        entry = Entry(kind="delivery", thread_id=thread_id, data=event.model_dump(mode="json", exclude_none=True))
        sid, status = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus") or form.get("SmsStatus")
        await self.rt.ingest.enqueue(entry, dedupe_id=f"{sid}:{status}")
        return Response(status_code=204)

    # ------------------------------------------------------------ outbound
    async def send(self, message: OutboundMessage) -> Sent:
        """Send `message` in order, segment by segment; a retry skips the segments that went."""
        their = message.reply_to.get("to") or message.address
        ours = message.reply_to.get("from") or self.settings.twilio_from_number
        service = self.settings.twilio_messaging_service_sid
        if not E164.match(their or ""):
            raise DeliveryFailed(f"not an E.164 number: {their!r}")
        if not (ours or service):
            raise DeliveryFailed("no number to send from: set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        if await self.optouts.has(their):
            raise DeliveryFailed("recipient opted out")
        key = self.rt.keys.key("sms", "segments", message.id)
        went = await self.rt.redis.hgetall(key)
        sids = []
        for index, body in enumerate(segments(render(message))):
            sid = went.get(str(index))
            if sid is None:
                created = await self._create(their, ours, service, body, self._callback_url(message))
                sid, ours = created.sid, ours or created.sender
                async with self.rt.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(key, str(index), sid)
                    pipe.expire(key, self.settings.dedupe_ttl)
                    await pipe.execute()
            sids.append(sid)
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

    def _callback_url(self, message: OutboundMessage) -> str | None:
        """Where Twilio reports this message's status; the query names the thread and message."""
        if not self.settings.public_url:
            return None  # Twilio needs a URL it can reach; without one, no status callbacks
        query = urlencode({"o": message.id, "t": message.thread_id})
        return f"{self.settings.public_url.rstrip('/')}/twilio/status?{query}"

    # ------------------------------------------------------------ media, lifecycle
    async def fetch_media(self, ref: str, max_bytes: int | None = None) -> Media:
        """The bytes of an attachment, fetched with the account's credentials, size-capped."""
        return await fetch_media(self.rt.http, self.settings, ref, max_bytes)

    async def aclose(self) -> None:
        await self.rest.aclose()
