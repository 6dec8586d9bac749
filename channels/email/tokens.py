"""Reply tokens: `agent+<thread>.<mac>@domain`, a second key to a thread.

A reply whose client dropped In-Reply-To and References still finds its thread
through the address it was sent to. The mac is an HMAC of the thread id, so a
token cannot be made up for someone else's thread; a forged one is ignored and
the mail is new mail to the agent.

The key is FRONTDESK_EMAIL_TOKEN_SECRET when set; otherwise a random secret kept
in Redis (created once with SET NX), so every replica signs and checks alike and
rotating another secret (the API token) does not orphan replies in flight.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

_TOKEN = re.compile(r"^(th_[0-9a-f]{6,64})\.([a-z2-7]{16})$")


def mint(key: bytes, thread_id: str) -> str:
    """The token for `thread_id`: lower-case, so mail systems that fold case keep it valid."""
    return f"{thread_id}.{_mac(key, thread_id)}"


def verify(key: bytes, token: str) -> str | None:
    """The thread id a genuine token names, else None."""
    match = _TOKEN.match(token.lower())
    if not match or not hmac.compare_digest(match.group(2), _mac(key, match.group(1))):
        return None
    return match.group(1)


def looks_like(token: str) -> bool:
    """Whether a plus part claims to be a reply token (rather than a tag someone chose)."""
    return token.lower().startswith("th_")


def split(address: str) -> tuple[str, str]:
    """(`local@domain` without the plus part, the token or "")."""
    local, at, domain = address.lower().partition("@")
    base, _, token = local.partition("+")
    return f"{base}{at}{domain}", token


def with_token(address: str, token: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local}+{token}@{domain}"


def new_secret() -> str:
    return secrets.token_hex(32)


def _mac(key: bytes, thread_id: str) -> str:
    digest = hmac.new(key, thread_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:16]
