"""Webhooks in and out, signed with the Standard Webhooks scheme.

Inbound `POST /webhooks/{agent}` carries `webhook-id`, `webhook-timestamp` and
`webhook-signature` (v1 = base64 HMAC-SHA256 of "id.timestamp.body"); the id is
the dedupe key, the timestamp must sit inside the replay window, and any of the
agent's secrets may have signed it (several are accepted during a rotation).
Body: {"text", "data"?, "conversation"?, "callback_url"?, "decision"?}; to answer
a question sent to a callback, POST with `"conversation"` set to the thread id
the callback named.

Replies for webhook threads are POSTed to the callback URL, signed with the
agent's first secret. The outbound id is the `webhook-id`, so a receiver that
deduplicates by it makes a re-send after a timeout harmless (`resend_safe`).
Callback URLs must be public unless FRONTDESK_CALLBACK_ALLOW_PRIVATE is set:
they come from outside, and a URL pointing into our network would be an SSRF.
They are checked on arrival and called through the context's `egress` client,
which connects only to the address it resolved and checked (gateway/egress.py).
"""

from __future__ import annotations

import functools
import hmac
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from gateway.egress import check_url as check_callback
from gateway.errors import BadSignature, DeliveryFailed, Malformed, Replayed, UnknownAgent, answer
from gateway.messages import Accepted, ApprovalChoice, Contact, InboundMessage, OutboundMessage, Sent
from gateway.protocols import ChannelBase, ChannelContext
from gateway.retry import retry_after
from gateway.settings import secret_values


class WebhookBody(BaseModel):
    text: str = Field(min_length=1, max_length=100_000)
    data: dict[str, Any] | None = None
    conversation: str | None = Field(default=None, min_length=1, max_length=256)
    callback_url: str | None = Field(default=None, max_length=2048)
    decision: ApprovalChoice | None = None


def secrets_for(settings, agent: str) -> list[str]:
    """The agent's accepted secrets, signing one first (FRONTDESK_WEBHOOK_SECRET[_<AGENT>])."""
    return secret_values(settings.webhook_secrets.get(agent.lower()) or settings.webhook_secret)


def no_secret(agent: str) -> str:
    return (
        f"no webhook secret to sign callbacks for {agent!r}: "
        f"set FRONTDESK_WEBHOOK_SECRET_{agent.upper()} or FRONTDESK_WEBHOOK_SECRET"
    )


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The v1 signature, computed by the standardwebhooks package itself."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return _webhook(secret).sign(msg_id, when, body.decode("utf-8"))


@functools.lru_cache(maxsize=64)
def _webhook(secret: str) -> Webhook:
    # Webhook() base64-decodes its secret; once per secret, not once per request.
    return Webhook(secret)


def verify(
    secrets: list[str], headers: Mapping[str, str], body: bytes, tolerance: int, now: float | None = None
) -> str:
    """The webhook id of a correctly signed, fresh request; raises BadSignature or Replayed."""
    msg_id, stamp, signatures = (
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
    )
    if not (msg_id and stamp and signatures):
        raise BadSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise BadSignature("webhook-timestamp is not an integer") from None
    if abs((now or time.time()) - timestamp) > tolerance:
        raise Replayed(f"webhook-timestamp outside the {tolerance} s window")
    try:
        expected = [signature(s, msg_id, timestamp, body).split(",", 1)[1] for s in secrets]
    except UnicodeDecodeError:
        raise Malformed("body is not UTF-8") from None
    except (EmptyWebhookSecretError, ValueError):
        raise BadSignature("the agent's webhook secret is not valid base64") from None
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and any(hmac.compare_digest(value.encode(), e.encode()) for e in expected):
            return msg_id
    raise BadSignature("no signature matches")


class WebhookChannel(ChannelBase):
    name = "webhook"
    resend_safe = True

    def __init__(self, context: ChannelContext) -> None:
        self.settings = context.settings
        self.http = context.egress
        self.inbox = context.inbox(self.name)

    def router(self) -> APIRouter:
        router = APIRouter(tags=["webhooks"])

        @router.post("/webhooks/{agent}", status_code=202)
        async def inbound(agent: str, request: Request) -> JSONResponse:
            """Start or continue a thread; answers 202 {"thread_id"}."""
            accepted = await self.accept(agent, request.headers, await request.body())
            return JSONResponse({"thread_id": accepted.thread_id, "duplicate": accepted.duplicate}, status_code=202)

        return router

    async def accept(self, agent: str, headers: Mapping[str, str], body: bytes) -> Accepted:
        routed = self.inbox.route(agent)
        if routed is None:
            raise UnknownAgent(f"no agent {agent!r} takes webhooks")
        secrets = secrets_for(self.settings, agent)
        if not secrets:
            raise BadSignature(f"no webhook secret is configured for {agent!r}")
        msg_id = verify(secrets, headers, body, self.settings.webhook_tolerance)
        message = self.parse(agent, msg_id, body)
        accepted = await self.inbox.accept(message, agent=routed)
        # Over the rate: 429 + Retry-After, which a caller honours, sending the same webhook-id again.
        answer("http", accepted, message)
        return accepted

    def parse(self, agent: str, msg_id: str, body: bytes) -> InboundMessage:
        try:
            payload = WebhookBody.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise Malformed(f"invalid body: {where}: {first['msg']}") from None
        callback = check_callback(payload.callback_url, self.settings) if payload.callback_url else None
        return InboundMessage(
            id=msg_id,
            channel="webhook",
            # Namespaced by agent: one agent's callers cannot reach another agent's threads.
            conversation=f"{agent}/{payload.conversation or msg_id}",
            # The caller is known by where it wants answers; a caller without a callback polls the API.
            sender=callback or f"{agent}-caller",
            text=payload.text,
            address=agent,
            data=payload.data,
            reply_to={"callback_url": callback} if callback else {},
            decision=payload.decision,
        )

    def unreachable_reason(self, agent: str, contact: Contact) -> str | None:
        """A contact's callbacks must be signed, and go only where a callback may go."""
        if not secrets_for(self.settings, agent):
            return no_secret(agent)
        try:
            check_callback(contact.address, self.settings)
        except Malformed as exc:
            return str(exc)
        return None

    def addressable(self, message: OutboundMessage) -> bool:
        return (message.reply_to.get("callback_url") or message.address).startswith(("http://", "https://"))

    async def send(self, message: OutboundMessage) -> Sent:
        url = message.reply_to.get("callback_url") or message.address
        if not url.startswith(("http://", "https://")):
            raise DeliveryFailed(f"no callback URL for this thread ({url!r})")
        try:
            check_callback(url, self.settings)
        except Malformed as exc:
            raise DeliveryFailed(str(exc)) from None
        host = urlsplit(url).hostname or ""
        secrets = secrets_for(self.settings, message.agent)
        if not secrets:
            raise DeliveryFailed(no_secret(message.agent))
        payload = message.payload if message.payload is not None else _payload(message)
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secrets[0], message.id, timestamp, body),
        }
        try:
            response = await self.http.post(url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise DeliveryFailed(f"cannot connect to {host}: {exc}", retryable=True) from exc
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"no answer from {host}", ambiguous=True) from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"connection to {host} failed: {exc}", ambiguous=True) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryFailed(
                f"callback answered {response.status_code}",
                status=response.status_code,
                retryable=True,
                retry_after=retry_after(response.headers),
            )
        if response.status_code >= 300:
            raise DeliveryFailed(f"callback answered {response.status_code}", status=response.status_code)
        # The payload names the thread; a caller answers with {"conversation": thread_id}.
        conversation = f"{message.agent}/{message.thread_id}"
        return Sent(detail=str(response.status_code), conversation=conversation, reply_to={"callback_url": url})


def _payload(message: OutboundMessage) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": message.kind,
        "thread_id": message.thread_id,
        "agent": message.agent,
        "id": message.id,
        "conversation": message.thread_id,
        "text": message.text,
    }
    if message.choices:
        payload["choices"] = message.choices
    if message.actions:
        payload["actions"] = [a.model_dump() for a in message.actions]
    return payload


def channel(context: ChannelContext) -> WebhookChannel:
    """Webhooks are always on: every request must be signed, so no secret means no entry."""
    return WebhookChannel(context)
