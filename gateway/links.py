"""Approval links: a signed, expiring, single-use capability to decide one gated call.

A person whose channel cannot vouch for them (mail that fails DKIM/DMARC) is sent
a link instead of having their YES taken. The link goes to the address the
channel names them by, so using it proves they read that mailbox, as a password
reset link does. The token names the thread, the call and the identity it was
sent to, expires after LINK_SECONDS, and carries a nonce; the dashboard route
that takes it enqueues the decision with that nonce as its dedupe key, so a
second use is a duplicate (the ingest script's dedupe, not a second store).

Token: base64url(JSON payload) "." hex HMAC-SHA256 of it (first 32 digits), under
a key derived from FRONTDESK_API_TOKEN, else a random secret kept in Redis (open
mode, as the dashboard's session key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from gateway.settings import Settings
from gateway.store.keys import Keys

# At most FRONTDESK_DEDUPE_TTL (see `lifetime`): a used link must stay used for as long as it is valid.
LINK_SECONDS = 24 * 3600
_LABEL = b"frontdesk approval link v1"
PATH = "/dashboard/approve/"


@dataclass(frozen=True)
class Link:
    """What a genuine, unexpired token grants."""

    thread_id: str
    call_id: str
    identity: str  # who it was sent to; the decision is recorded as theirs
    expires: int
    nonce: str


def lifetime(settings: Settings) -> int:
    """Seconds a link is valid: a day, or less when the dedupe keys that make it single-use live less."""
    return min(LINK_SECONDS, settings.dedupe_ttl)


def mint(key: bytes, thread_id: str, call_id: str, identity: str, seconds: int = LINK_SECONDS) -> str:
    expires = int(time.time()) + seconds
    payload = {"t": thread_id, "c": call_id, "i": identity, "e": expires, "n": secrets.token_urlsafe(12)}
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, token: str, now: float | None = None) -> Link | None:
    """The link a token grants; None when it is not ours, altered, or expired."""
    body, _, mac = token.partition(".")
    if not body or not hmac.compare_digest(mac.encode(), _mac(key, body).encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        link = Link(str(data["t"]), str(data["c"]), str(data["i"]), int(data["e"]), str(data["n"]))
    except (ValueError, KeyError, TypeError):
        return None
    return link if (now if now is not None else time.time()) < link.expires else None


def base_url(settings: Settings) -> str:
    """Where people reach the dashboard: FRONTDESK_PUBLIC_URL, else the HTTP listener."""
    return (settings.public_url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")


class Linker:
    """Mints and checks approval links with the deployment's key.

    The router mints synchronously, so the key is read ahead (`ensure`, by the worker
    before it decides an entry); with FRONTDESK_API_TOKEN set it needs no Redis at all.
    """

    def __init__(self, settings: Settings, redis: aioredis.Redis, keys: Keys) -> None:
        self.base = base_url(settings)
        self.seconds = lifetime(settings)
        self._redis, self._name = redis, keys.key("links", "secret")
        token = settings.api_token
        self.key: bytes | None = (
            hmac.new(token.get_secret_value().encode(), _LABEL, hashlib.sha256).digest() if token else None
        )

    async def ensure(self) -> bytes:
        """The key; without an API token, a random secret shared through Redis (SET NX, once)."""
        if self.key is None:
            await self._redis.set(self._name, secrets.token_hex(32), nx=True)
            self.key = bytes.fromhex(cast(str, await self._redis.get(self._name)))
        return self.key

    def __call__(self, thread_id: str, call_id: str, identity: str) -> str | None:
        """The link for one decision; None before the key is read."""
        if self.key is None:
            return None
        return f"{self.base}{PATH}{mint(self.key, thread_id, call_id, identity, self.seconds)}"


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]
