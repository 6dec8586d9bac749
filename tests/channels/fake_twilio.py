"""A fake Twilio on loopback: the parts of the REST API the SMS and WhatsApp channels use.

It speaks Twilio's wire format — Messages create (`POST /2010-04-01/Accounts/
{AccountSid}/Messages.json`, form-encoded, basic auth) answering JSON shaped like
Twilio's, errors as `{code, message, more_info, status}` — and serves media. It
records every call, can be told how to answer the next creates (in order, or
by what they carry: `rule`), and plays
Twilio's side of webhooks: requests signed with the package's RequestValidator.

WhatsApp: addresses are `whatsapp:+E164`; a message from a user opens a 24-hour session
with the sender it wrote to (`incoming_whatsapp`, or `open_session`). A create with a
`ContentSid` (a template) is taken at any time; free text outside a session is taken and
marked `"Window": "closed"`, the way Twilio takes it and then fails it with 63016 in the
status callback (`callback(message, "failed", 63016)`), or refused at once with 63016 when
`refuse_outside_window` is set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
from aiohttp import web
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
OUTSIDE_WINDOW = 63016
AUTH_TOKEN = "fake-auth-token-" + "0" * 16


def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    """X-Twilio-Signature for a POST of `params` to `url`, as Twilio computes it."""
    return RequestValidator(token).compute_signature(url, params)


@dataclass
class Reply:
    """How the fake answers one Messages create."""

    status: int = 201
    code: int | None = None
    message: str = ""
    retry_after: str | None = None
    hang: bool = False  # never answer (until the server closes): the client times out
    reset: bool = False  # create the message, then drop the connection without answering
    delay: float = 0.0  # seconds before answering


class FakeTwilio:
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: list[dict] = []  # every request: method, path, authorized, form
        self.messages: list[dict[str, str]] = []  # accepted creates, in order, with their "Sid"
        self._script: list[Reply] = []
        # A create's form -> how to answer it, or None to go on as usual; asked before the script.
        self.rule: Callable[[dict[str, str]], Reply | None] | None = None
        self._media: dict[str, tuple[bytes, str, bool]] = {}
        self._cdn: dict[str, str] = {}  # media path -> CDN path it redirects to
        self._closing = asyncio.Event()
        self.sessions: set[tuple[str, str]] = set()  # (user, our sender) with an open WhatsApp window
        self.refuse_outside_window = False  # answer free text outside a session with 400/63016
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/{mm}/Media/{me}", self._media_get)
        app.router.add_get("/cdn/{path:.*}", self._cdn_get)
        self._runner = web.AppRunner(app, access_log=None)
        self.url = ""

    async def __aenter__(self) -> FakeTwilio:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._closing.set()
        await self._runner.cleanup()

    # ------------------------------------------------------------ scripting
    def answer_next(self, *replies: Reply) -> None:
        """Answer the next creates with `replies`, in order; then succeed again."""
        self._script.extend(replies)

    def fail_next(self, status: int, code: int, message: str, retry_after: str | None = None) -> None:
        self.answer_next(Reply(status=status, code=code, message=message, retry_after=retry_after))

    def add_media(self, content: bytes, content_type: str, *, chunked: bool = False, via_cdn: bool = False) -> str:
        """A media URL of this account serving `content` (without Content-Length when chunked).

        `via_cdn`: answer with a redirect to another origin (`localhost`), as Twilio
        redirects media to its CDN; `cdn_calls` records what reached it.
        """
        mm, me = "MM" + secrets.token_hex(16), "ME" + secrets.token_hex(16)
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{mm}/Media/{me}"
        self._media[path] = (content, content_type, chunked)
        if via_cdn:
            self._cdn[path] = f"/cdn/{mm}/{me}"
            self._media[self._cdn[path]] = self._media[path]
        return self.url + path

    async def callback(
        self, message: dict[str, str], status: str, error_code: int | None = None, *, token: str | None = None
    ) -> int:
        """POST a status callback for `message` to its StatusCallback, signed; the HTTP status."""
        url = message["StatusCallback"]
        params = {
            "AccountSid": self.account_sid,
            "MessageSid": message["Sid"],
            "SmsSid": message["Sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "From": message.get("From", ""),
            "To": message["To"],
            "ApiVersion": "2010-04-01",
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return (await self.webhook(url, params, token=token)).status_code

    async def incoming(self, url: str, sid: str, sender: str, to: str, body: str) -> httpx.Response:
        """Deliver an incoming SMS to our webhook at `url`, as Twilio does."""
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.account_sid,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "ApiVersion": "2010-04-01",
        }
        return await self.webhook(url, params)

    def open_session(self, user: str, sender: str) -> None:
        """`user` wrote to `sender` on WhatsApp: free text between them is allowed for now."""
        self.sessions.add((user, sender))

    async def incoming_whatsapp(
        self,
        url: str,
        sid: str,
        sender: str,
        to: str,
        body: str,
        *,
        profile_name: str | None = None,
        media: Sequence[tuple[str, str]] = (),
        token: str | None = None,
    ) -> httpx.Response:
        """Deliver an incoming WhatsApp message (addresses `whatsapp:+…`) to our webhook, as Twilio does."""
        params = {
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.account_sid,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": str(len(media)),
            "NumSegments": "1",
            "MessageType": "image" if media else "text",
            "WaId": sender.removeprefix("whatsapp:+"),
            "ApiVersion": "2010-04-01",
        }
        if profile_name is not None:
            params["ProfileName"] = profile_name
        for i, (media_url, content_type) in enumerate(media):
            params[f"MediaUrl{i}"], params[f"MediaContentType{i}"] = media_url, content_type
        self.open_session(sender, to)
        return await self.webhook(url, params, token=token)

    async def webhook(self, url: str, params: dict[str, str], *, token: str | None = None) -> httpx.Response:
        """POST `params` to `url`, signed with the auth token (or `token`)."""
        headers = {"X-Twilio-Signature": sign(url, params, token or self.auth_token)}
        async with httpx.AsyncClient() as client:
            return await client.post(url, data=params, headers=headers)

    # ------------------------------------------------------------ handlers
    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return (
            request.headers.get("Authorization") == f"Basic {expected}"
            and request.match_info["sid"] == self.account_sid
        )

    async def _create(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        authorized = self._authorized(request)
        self.calls.append({"method": "POST", "path": request.path, "authorized": authorized, "form": form})
        if not authorized:
            return _error(401, 20003, "Authenticate")
        if not form.get("To") or not (form.get("From") or form.get("MessagingServiceSid")):
            return _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message")
        if len(form.get("Body", "")) > 1600:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit")
        content_sid = form.get("ContentSid")
        if content_sid is not None:
            if not (content_sid.startswith("HX") and len(content_sid) == 34):
                return _error(400, 21655, "The ContentSid is Invalid")
            if "Body" in form:
                return _error(
                    400, 21619, "A text message body or media urls must be specified, not both with ContentSid"
                )
            try:
                variables = json.loads(form.get("ContentVariables", "{}"))
            except ValueError:
                variables = None
            if not isinstance(variables, dict):
                return _error(400, 21656, "The ContentVariables Parameter is invalid")
        elif not form.get("Body") and not form.get("MediaUrl"):
            return _error(400, 21602, "Message body is required")
        outside = (
            form["To"].startswith("whatsapp:")
            and content_sid is None
            and (form["To"], form.get("From", "")) not in self.sessions
        )
        if outside and self.refuse_outside_window:
            return _error(
                400, OUTSIDE_WINDOW, "Failed to send freeform message because you are outside the allowed window."
            )
        reply = self.rule(form) if self.rule is not None else None
        if reply is None:
            reply = self._script.pop(0) if self._script else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.hang:
            await self._closing.wait()
            return _error(503, 20500, "Internal Server Error")
        if reply.status >= 400:
            headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
            return _error(reply.status, reply.code, reply.message, headers)
        sid = "SM" + secrets.token_hex(16)
        self.messages.append({**form, "Sid": sid, **({"Window": "closed"} if outside else {})})
        if reply.reset:
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        return web.json_response(_message_json(self.account_sid, sid, form), status=201)

    async def _media_get(self, request: web.Request) -> web.StreamResponse:
        authorized = self._authorized(request)
        self.calls.append({"method": "GET", "path": request.path, "authorized": authorized, "form": {}})
        if not authorized:
            return _error(401, 20003, "Authenticate")
        if request.path not in self._media:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        if request.path in self._cdn:
            raise web.HTTPTemporaryRedirect(self.url.replace("127.0.0.1", "localhost") + self._cdn[request.path])
        return await self._serve(request, *self._media[request.path])

    async def _cdn_get(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(
            {"method": "GET", "path": request.path, "authorized": "Authorization" in request.headers, "form": {}}
        )
        return await self._serve(request, *self._media[request.path])

    async def _serve(
        self, request: web.Request, content: bytes, content_type: str, chunked: bool
    ) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=content, content_type=content_type)
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(content), 64 * 1024):
            await response.write(content[i : i + 64 * 1024])
        await response.write_eof()
        return response


def _error(status: int, code: int | None, message: str, headers: dict | None = None) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def _message_json(account_sid: str, sid: str, form: dict[str, str]) -> dict:
    now = format_datetime(datetime.now(UTC))
    uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}"
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": form.get("Body", ""),
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if form.get("MessagingServiceSid") and not form.get("From") else "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": form["To"],
        "uri": f"{uri}.json",
    }
