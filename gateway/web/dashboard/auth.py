"""Who may use the dashboard: a login form, a signed session cookie, a CSRF token per session.

With FRONTDESK_API_TOKEN set, the login form takes that token (compared in
constant time) and sets an HttpOnly, SameSite=Strict cookie: a random session id,
when it was issued, and an HMAC of both under a key derived from the token. The
session is also recorded in Redis (gateway.web.dashboard.sessions) and counts only
while it is there: logging out, or an operator ending all sessions, ends it on
every replica, and a copied cookie stops working. Changing the token ends every
session too. The CSRF token is an HMAC of the session id under the same key,
sent back with every POST (form field `csrf` or header X-CSRF-Token).

With no token the dashboard is open, but only while the server listens on
loopback (anyone who can reach the port is on this machine). Actions still need
the CSRF token: a web page in the same browser could otherwise post to 127.0.0.1.
The key then comes from a random secret kept in Redis, shared by every process;
nobody logs in, so these sessions are not recorded (there is nothing to end).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qs

from fastapi import HTTPException, Request

from gateway.runtime import Runtime
from gateway.web.dashboard.sessions import DashboardSessions

COOKIE = "frontdesk_session"
LOGIN_COOKIE = "frontdesk_login"  # double-submit nonce of the login form
SESSION_SECONDS = 12 * 3600
_LABEL = b"frontdesk dashboard session v1"


class NotAllowed(Exception):
    """The dashboard is closed: no token is set and the server is reachable from elsewhere."""


class LoginRequired(Exception):
    """No valid session; pages send the browser to the login form."""


@dataclass
class Session:
    sid: str
    csrf: str
    cookie: str | None = None  # a fresh cookie value to set on the response (open mode)
    open: bool = False  # no token: nobody logs in


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


async def signing_key(request: Request) -> bytes:
    """The HMAC key for cookies and CSRF tokens (cached on the app)."""
    cached = getattr(request.app.state, "dashboard_key", None)
    if cached is not None:
        return cached
    rt: Runtime = request.app.state.runtime
    token = rt.settings.api_token
    if token is not None:
        key = hmac.new(token.get_secret_value().encode(), _LABEL, hashlib.sha256).digest()
    else:
        name = rt.keys.key("dashboard", "secret")
        await rt.redis.set(name, secrets.token_hex(32), nx=True)
        key = bytes.fromhex(cast(str, await rt.redis.get(name)))  # set just above; a decoding client
    request.app.state.dashboard_key = key
    return key


def new_cookie(key: bytes) -> tuple[str, str]:
    """(session id, cookie value)."""
    sid = secrets.token_urlsafe(18)
    issued = str(int(time.time()))
    return sid, f"{sid}.{issued}.{_mac(key, f'{sid}.{issued}')}"


def session_id(key: bytes, value: str | None) -> str | None:
    """The session id a cookie carries, if it is ours and not expired."""
    sid, _, rest = (value or "").partition(".")
    issued, _, mac = rest.partition(".")
    if not sid or not issued.isdigit() or not hmac.compare_digest(mac, _mac(key, f"{sid}.{issued}")):
        return None
    if not 0 <= time.time() - int(issued) < SESSION_SECONDS:
        return None
    return sid


def sessions(rt: Runtime) -> DashboardSessions:
    return DashboardSessions(rt.redis, rt.keys)


async def log_in(request: Request) -> str:
    """A new recorded session for a login that gave the token; the cookie value to set."""
    sid, cookie = new_cookie(await signing_key(request))
    client = request.client.host if request.client else ""
    await sessions(request.app.state.runtime).add(sid, SESSION_SECONDS, client, request.headers.get("user-agent", ""))
    return cookie


def csrf_for(key: bytes, sid: str) -> str:
    return _mac(key, f"csrf:{sid}")[:40]


def token_matches(rt: Runtime, given: str) -> bool:
    token = rt.settings.api_token
    # Constant time: a comparison that stops early would tell how much of a guess was right.
    return token is not None and hmac.compare_digest(given.encode(), token.get_secret_value().encode())


def check_open(rt: Runtime) -> bool:
    """Whether no login is needed; NotAllowed when the dashboard must stay closed."""
    if rt.settings.api_token is not None:
        return False
    if rt.settings.http_on_loopback:
        return True
    raise NotAllowed("Set FRONTDESK_API_TOKEN to use the dashboard: with no token it only opens on a loopback address.")


async def session(request: Request) -> Session:
    """The viewer's session; in open mode one is made on first sight."""
    rt: Runtime = request.app.state.runtime
    is_open = check_open(rt)
    key = await signing_key(request)
    sid = session_id(key, request.cookies.get(COOKIE))
    if sid is not None and (is_open or await sessions(rt).live(sid)):
        return Session(sid=sid, csrf=csrf_for(key, sid), open=is_open)
    if not is_open:
        raise LoginRequired()
    sid, cookie = new_cookie(key)
    return Session(sid=sid, csrf=csrf_for(key, sid), cookie=cookie, open=True)


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the only kind the dashboard posts), one value per field."""
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form urlencoded")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


async def actor(request: Request) -> tuple[Session, dict[str, str]]:
    """(session, form) of a POST whose CSRF token is right; 403 otherwise."""
    try:
        current = await session(request)
    except LoginRequired:
        raise HTTPException(403, "log in first") from None
    if current.cookie is not None:
        raise HTTPException(403, "no session: reload the page")
    fields = await form(request)
    given = request.headers.get("x-csrf-token") or fields.get("csrf", "")
    if not given or not hmac.compare_digest(given, current.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page")
    return current, fields


def secure_cookie(request: Request) -> bool:
    """Mark cookies Secure when the browser reached us over HTTPS (directly or via the public URL)."""
    rt: Runtime = request.app.state.runtime
    public = rt.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def set_session_cookie(response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request),
    )
