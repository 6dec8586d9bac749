"""Twilio's requests to us: the one webhook every Twilio channel shares, and its form as plain functions.

Twilio posts every incoming message and status callback of an account's senders to the
URLs configured for them; an SMS number and a WhatsApp sender both point at
`/twilio/sms` and `/twilio/status`. `TwilioWebhook` owns those two routes for every
Twilio channel of a runtime: it checks the signature once, then hands the form to the
channel whose address it is, by the address's scheme (`whatsapp:+15550001111` is
WhatsApp's, a bare `+15550001111` is SMS's).

Twilio signs the full URL it called followed by the sorted form fields
(HMAC-SHA1 with the auth token, https://www.twilio.com/docs/usage/security);
the package's RequestValidator checks it, trying the URL with and without the port.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from gateway.errors import BadSignature, Malformed
from gateway.messages import Attachment, DeliveryEvent, DeliveryStatus, InboundMessage, OutboundMessage
from gateway.protocols import ChannelContext, Inbox
from gateway.settings import Settings, secret_values

MAX_MEDIA = 10  # Twilio delivers at most ten media items per message

# Twilio's MessageStatus values (https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks)
# as ours; `read` is WhatsApp's; `receiving`/`received` are inbound and `canceled` a
# scheduled message we withdrew, none of which says anything about a delivery.
STATUSES: dict[str, DeliveryStatus] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
}


def signed_url(request: Request, settings: Settings) -> str:
    """The URL Twilio signed: behind a proxy or tunnel that is FRONTDESK_PUBLIC_URL, not request.url."""
    if not settings.public_url:
        return str(request.url)
    query = request.url.query
    return settings.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


async def verified_form(
    request: Request, settings: Settings, validators: Sequence[RequestValidator]
) -> ImmutableMultiDict:
    """The request's form fields, once X-Twilio-Signature has been checked against them (any token of a rotation)."""
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the form body is not UTF-8") from None
    pairs = parse_qsl(body, keep_blank_values=True)
    signature = request.headers.get("X-Twilio-Signature", "")
    url = signed_url(request, settings)
    if not signature or not any(signed(v, url, pairs, signature) for v in validators):
        # Twilio's own guidance answers a request that fails validation with 403.
        raise BadSignature("X-Twilio-Signature does not match", status=403)
    return ImmutableMultiDict(pairs)


class _Fields(dict[str, list[str]]):
    """A form as `RequestValidator` reads a Flask MultiDict: every value of a field from `getall`.

    The package asks each field for `getall`, then `getlist`, then a plain value, by catching
    AttributeError. A Starlette multi-dict has no `getall`, so every field of every request
    raised once: `validate` took 62 µs on a 20-field SMS, and 28 µs given this (in-process).
    That was a sixth of the SMS route's CPU, and with it the Twilio ingest p99 stood over
    15 ms (benchmarks/NOTES.md).
    """

    def getall(self, name: str) -> list[str]:
        return self[name]


def signed(validator: RequestValidator, url: str, pairs: list[tuple[str, str]], signature: str) -> bool:
    """Whether `signature` signs the form for `url`, by the package's own `validate`.

    A shortcut that computed one URL form first saved about 25 µs of about 286 µs per SMS,
    with the SMS bar's headroom near 50 % (benchmarks/): not worth reaching into the package.
    """
    fields = _Fields()
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return validator.validate(url, fields, signature)


def to_inbound(form: ImmutableMultiDict, channel: str = "sms") -> InboundMessage:
    """An incoming message: the conversation is (their address, ours), each as Twilio writes it."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    their, our = form.get("From"), form.get("To")
    if not (sid and their and our):
        raise Malformed("MessageSid, From and To are required")
    return InboundMessage(
        id=sid,
        channel=channel,
        conversation=f"{their}/{our}",
        sender=their,
        address=our,
        text=form.get("Body", ""),
        attachments=attachments(form),
        reply_to={"to": their, "from": our},
    )


def attachments(form: ImmutableMultiDict) -> list[Attachment]:
    """The message's media (`MediaUrlN`), at most MAX_MEDIA; fetched later, on demand (`media`)."""
    try:
        count = min(int(form.get("NumMedia", "0") or 0), MAX_MEDIA)
    except ValueError:
        raise Malformed("NumMedia is not a number") from None
    found = []
    for i in range(count):
        url = form.get(f"MediaUrl{i}")
        if url:
            found.append(
                Attachment(ref=url, content_type=form.get(f"MediaContentType{i}") or "application/octet-stream")
            )
    return found


def to_delivery(
    form: ImmutableMultiDict, outbound_id: str, channel: str = "sms", why: str | None = None
) -> DeliveryEvent | None:
    """A status callback as a `delivery` event; None for a status that reports no delivery.

    `why` explains a failure in words, after Twilio's error code.
    """
    sid, raw = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus") or form.get("SmsStatus")
    status = STATUSES.get((raw or "").lower())
    if not (sid and status and outbound_id):
        return None
    detail = sid
    if status == "failed":
        code = form.get("ErrorCode")
        detail = f"{sid} {raw}" + (f", Twilio error {code}" if code else "") + (f": {why}" if why else "")
    return DeliveryEvent(outbound_id=outbound_id, channel=channel, status=status, detail=detail)


def status_callback(settings: Settings, message: OutboundMessage) -> str | None:
    """Where Twilio reports `message`'s status; the query names the thread and message."""
    if not settings.public_url:
        return None  # Twilio needs a URL it can reach; without one, no status callbacks
    query = urlencode({"o": message.id, "t": message.thread_id})
    return f"{settings.public_url.rstrip('/')}/twilio/status?{query}"


async def record_status(
    inbox: Inbox, event: DeliveryEvent | None, form: ImmutableMultiDict, thread_id: str
) -> Response:
    """Append a status callback's `event` to the thread named in its URL, once per (message, status)."""
    if event is None or not thread_id:
        return Response(status_code=204)  # nothing to record
    sid, status = form.get("MessageSid") or form.get("SmsSid"), form.get("MessageStatus") or form.get("SmsStatus")
    await inbox.record_delivery(thread_id, event, dedupe_id=f"{sid}:{status}")  # False: the thread is gone
    return Response(status_code=204)


# Built once: the answer to almost every SMS, and the package's XML writer costs more than the rest of the reply.
_EMPTY_TWIML = MessagingResponse().to_xml()


def twiml(text: str | None = None) -> Response:
    """An empty TwiML answer, or one that replies with `text`."""
    if not text:
        return Response(content=_EMPTY_TWIML, media_type="text/xml")
    response = MessagingResponse()
    response.message(text)
    return Response(content=response.to_xml(), media_type="text/xml")


# ---------------------------------------------------------------- the shared webhook


def scheme(address: str) -> str:
    """The channel prefix of a Twilio address: `whatsapp` for `whatsapp:+1555…`, "" for a phone number."""
    prefix, sep, _ = address.partition(":")
    return prefix.lower() if sep else ""


class Handler(Protocol):
    """A Twilio channel's side of the webhook: the form arrives with its signature checked."""

    async def on_message(self, form: ImmutableMultiDict) -> Response: ...

    async def on_status(self, form: ImmutableMultiDict, query: Mapping[str, str]) -> Response: ...


class TwilioWebhook:
    """POST /twilio/sms and /twilio/status for every Twilio channel of one runtime."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Several tokens during a rotation (comma-separated): Twilio's signature may use any of
        # them; the first authenticates our REST calls (TwilioRest, fetch_media).
        self.validators = [RequestValidator(token) for token in secret_values(settings.twilio_auth_token)]
        self.handlers: dict[str, Handler] = {}
        self._owner: Handler | None = None

    def attach(self, address_scheme: str, handler: Handler) -> None:
        """Hand the requests for addresses of `address_scheme` ("" for phone numbers) to `handler`."""
        self.handlers[address_scheme] = handler
        self._owner = self._owner or handler

    def router(self, handler: Handler) -> APIRouter | None:
        """The routes, to the first channel attached; None to the others, so each path is mounted once."""
        if handler is not self._owner:
            return None
        router = APIRouter(tags=["twilio"])
        router.add_api_route(
            "/twilio/sms",
            self.on_message,
            methods=["POST"],
            summary="Incoming SMS/MMS or WhatsApp message (Twilio webhook)",
        )
        router.add_api_route(
            "/twilio/status", self.on_status, methods=["POST"], summary="Message status callback (Twilio)"
        )
        return router

    async def on_message(self, request: Request) -> Response:
        """Verify, then hand to the channel of the address written to."""
        form = await verified_form(request, self.settings, self.validators)
        return await self._handler(form).on_message(form)

    async def on_status(self, request: Request) -> Response:
        """Verify, then hand to the channel of the address the message went to."""
        form = await verified_form(request, self.settings, self.validators)
        return await self._handler(form).on_status(form, request.query_params)

    def _handler(self, form: ImmutableMultiDict) -> Handler:
        # `To` carries the scheme both ways: ours on an incoming message, theirs on a status callback.
        address_scheme = scheme(form.get("To", ""))
        handler = self.handlers.get(address_scheme)
        if handler is None:
            raise Malformed(f"no channel here takes Twilio messages to {address_scheme or 'phone'} addresses")
        return handler


# One webhook per runtime, found by the ChannelContext the runtime hands every factory: the
# SMS and WhatsApp channels are built by separate factories (either may be loaded alone), and
# both must answer on the same two paths. Weak, so a closed runtime's webhook goes with it.
_WEBHOOKS: weakref.WeakKeyDictionary[ChannelContext, TwilioWebhook] = weakref.WeakKeyDictionary()


def webhook_for(context: ChannelContext) -> TwilioWebhook:
    """The Twilio webhook of the runtime that `context` belongs to, made on first use."""
    found = _WEBHOOKS.get(context)
    if found is None:
        found = _WEBHOOKS[context] = TwilioWebhook(context.settings)
    return found
