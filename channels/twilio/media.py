"""Media of an incoming message (MMS, WhatsApp), fetched when someone needs the bytes, never on the request path.

A `MediaUrlN` points at the Messages API (`/2010-04-01/Accounts/{sid}/Messages/
{MM}/Media/{ME}`), which may require the account's credentials and answers with a
redirect to its CDN. Only URLs under our own account on the configured API host
are fetched, so a forged reference cannot make us call an internal address with
the credentials attached; httpx drops the Authorization header when a redirect
leaves that origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from channels.twilio.rest import API_URL
from gateway.errors import Malformed, TooLarge, Unavailable
from gateway.settings import Settings, secret_values


@dataclass(frozen=True)
class Media:
    content: bytes
    content_type: str


def allowed(ref: str, settings: Settings) -> bool:
    """Whether `ref` is media of our account on the Twilio API host we talk to."""
    base, url = urlsplit((settings.twilio_api_url or API_URL).rstrip("/")), urlsplit(ref)
    prefix = f"{base.path}/2010-04-01/Accounts/{settings.twilio_account_sid}/"
    return (
        (url.scheme, url.netloc) == (base.scheme, base.netloc) and url.path.startswith(prefix) and ".." not in url.path
    )


async def fetch_media(http: httpx.AsyncClient, settings: Settings, ref: str, max_bytes: int | None = None) -> Media:
    """The bytes behind an attachment `ref`, refused above `max_bytes` (default FRONTDESK_SMS_MEDIA_MAX_BYTES)."""
    cap = max_bytes or settings.sms_media_max_bytes
    if not allowed(ref, settings):
        raise Malformed(f"not a Twilio media URL of this account: {ref}")
    token = next(iter(secret_values(settings.twilio_auth_token)), "")  # the first of a rotation
    try:
        async with http.stream("GET", ref, auth=(settings.twilio_account_sid or "", token), follow_redirects=True) as r:
            if r.status_code >= 500:
                raise Unavailable(f"Twilio media answered {r.status_code}")
            if r.status_code >= 400:
                raise Malformed(f"Twilio media answered {r.status_code} for {ref}")
            declared = r.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise TooLarge(f"attachment of {declared} bytes is over the {cap}-byte limit")
            body = bytearray()
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise TooLarge(f"attachment is over the {cap}-byte limit")
            return Media(bytes(body), r.headers.get("content-type", "application/octet-stream"))
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot fetch Twilio media: {exc}") from exc
