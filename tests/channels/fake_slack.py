"""A fake Slack on loopback, and Slack's side of the wire for tests.

`FakeSlack` serves the Web API methods the channel calls (`auth.test`,
`chat.postMessage`, `chat.update`, `chat.postEphemeral`, `reactions.add`,
`conversations.open`, `conversations.replies`, `conversations.history`, `views.open`,
`views.publish`, `oauth.v2.access`, `apps.connections.open`; for AI apps `assistant.threads.setStatus`,
`setTitle`, `setSuggestedPrompts`, `agents.sessions.setStatus`, `rename`, `chat.startStream`,
`appendStream`, `stopStream`; for files `files.getUploadURLExternal`, the upload URL it hands
out and `files.completeUploadExternal`, and `url_private` downloads that need the bot token)
under `/api/`, and a Socket Mode WebSocket; it records every call and can be told how to answer the next ones
(an error, a 429, no answer at all, a dropped connection, a slow answer), in
order (`script`) or by what they carry (`rule`). `signed` and the body builders make the
requests Slack would send, signed with the real v0 scheme (slack_sdk's verifier).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

TEAM = "T0TEAM"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SECRET = "test-signing-secret"
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "test-client-secret"


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | None = field(default_factory=lambda: {"ok": True})  # None: the usual answer
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


HANG = Reply(status=0)  # take the request, never answer (until the fake stops)
RESET = Reply(status=-1)  # act on the request as usual, then drop the connection without answering
TAKEN = Reply(status=-2)  # act on the request as usual, then never answer (until the fake stops)


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    authorization: str
    reply: dict[str, Any] | None = None  # what we answered, None if we did not

    @property
    def ok(self) -> bool:
        return bool(self.reply and self.reply.get("ok"))


class FakeSlack:
    """The Web API and Socket Mode endpoints, on 127.0.0.1 port 0."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)  # channel -> what was posted, in order
        self.views: dict[str, dict[str, Any]] = {}  # view id -> the modal or Home tab views.open / .publish showed
        self.homes: dict[str, Any] = {}  # user -> their Home tab, as last published
        self.tokens: dict[str, tuple[str, str]] = {TOKEN: (TEAM, BOT_USER)}  # bot token -> (team, bot user)
        self.codes: dict[str, dict[str, Any]] = {}  # OAuth code -> what it installs (`grant`)
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.expires_in = 43200  # seconds a rotating token lives (Slack's: 12 hours)
        self.scripts: dict[str, list[Reply]] = defaultdict(list)
        # (method, args) -> a Reply for this call, or None to go on as usual; asked before the scripts.
        self.rule: Callable[[str, dict[str, Any]], Reply | None] | None = None
        self.socket_acks: list[dict[str, Any]] = []
        self._envelopes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sockets: set[web.WebSocketResponse] = set()
        self._released = asyncio.Event()
        self._ts = itertools.count(1)
        self.streams: dict[str, dict[str, Any]] = {}  # ts -> {channel, thread_ts, text, chunks, open}
        self.uploads: dict[str, dict[str, Any]] = {}  # file id -> {filename, length, data, shared}
        self.hosted: dict[str, tuple[bytes, str]] = {}  # url_private path -> (bytes, mimetype)
        self.downloads: list[str] = []  # the Authorization header of each url_private fetch
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/files-pri/{path:.*}", self._download)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, handle_signals=False)
        self.port = 0

    async def __aenter__(self) -> FakeSlack:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._released.set()
        for ws in list(self._sockets):
            await ws.close()
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        """The base URL in slack_sdk's form (trailing slash)."""
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------ test API
    def script(self, method: str, *replies: Reply) -> None:
        """Answer the next calls of `method` with `replies`, in order; then as usual."""
        self.scripts[method].extend(replies)

    def to(self, method: str, *, ok: bool | None = True) -> list[dict[str, Any]]:
        """The arguments of the calls of `method` (ok=True: only those we accepted)."""
        return [c.args for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def posts(self, **match: Any) -> list[dict[str, Any]]:
        """Accepted chat.postMessage calls whose arguments include `match`."""
        return [a for a in self.to("chat.postMessage") if all(a.get(k) == v for k, v in match.items())]

    def host_file(self, name: str, data: bytes, mimetype: str = "text/plain", *, size: int | None = None) -> dict:
        """A file as Slack lists it on a message event, its bytes served at url_private."""
        file_id = f"F{next(self._ts):04d}"
        path = f"{TEAM}-{file_id}/{name}"
        self.hosted[path] = (data, mimetype)
        return {
            "id": file_id,
            "name": name,
            "mimetype": mimetype,
            "size": len(data) if size is None else size,
            "url_private": f"http://127.0.0.1:{self.port}/files-pri/{path}",
            "permalink": f"https://test.slack.invalid/files/{file_id}",
        }

    async def send_envelope(self, payload: dict[str, Any], kind: str = "events_api") -> str:
        """Push an envelope to the connected Socket Mode client; its envelope id."""
        envelope_id = f"env-{next(self._ts)}"
        await self._envelopes.put(
            {"envelope_id": envelope_id, "type": kind, "payload": payload, "accepts_response_payload": False}
        )
        return envelope_id

    # ------------------------------------------------------------ Web API
    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        call = Call(method, args, request.headers.get("Authorization", ""))
        self.calls.append(call)
        reply = self.rule(method, args) if self.rule is not None else None
        if reply is None and self.scripts[method]:
            reply = self.scripts[method].pop(0)
        if reply is HANG or reply is TAKEN:
            if reply is TAKEN:
                self._answer(method, args, call.authorization)
            await self._released.wait()
            return web.Response(status=503)
        if reply is RESET:
            call.reply = self._answer(method, args, call.authorization).body
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if reply is None:
            reply = self._answer(method, args, call.authorization)
        elif reply.body is None:
            usual = self._answer(method, args, call.authorization)
            reply = Reply(status=reply.status, body=usual.body, headers=reply.headers, delay=reply.delay)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        call.reply = reply.body
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    def _answer(self, method: str, args: dict[str, Any], authorization: str) -> Reply:
        if method == "oauth.v2.access":
            return self._oauth(args, authorization)
        if method == "apps.connections.open":
            if authorization != f"Bearer {APP_TOKEN}":
                return Reply(body={"ok": False, "error": "invalid_auth"})
        elif authorization.removeprefix("Bearer ") not in self.tokens:
            return Reply(body={"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            team, user = self.tokens[authorization.removeprefix("Bearer ")]
            body = {"ok": True, "team_id": team, "team": "Test", "user_id": user, "bot_id": BOT_ID, "user": "frontdesk"}
            return Reply(body=body)
        if method in ("chat.postMessage", "chat.update", "chat.postEphemeral") and (error := _refused(args)):
            return Reply(body={"ok": False, "error": error})
        if method == "chat.postMessage":
            if not args.get("channel") or args["channel"].startswith("CGONE"):
                return Reply(body={"ok": False, "error": "channel_not_found"})
            ts = self._next_ts()
            message = {"type": "message", "text": args.get("text", ""), "ts": ts, "bot_id": BOT_ID, "user": BOT_USER}
            if args.get("thread_ts"):
                message["thread_ts"] = args["thread_ts"]
            if isinstance(args.get("metadata"), dict):
                message["metadata"] = args["metadata"]
            self.messages[args["channel"]].append(message)
            return Reply(body={"ok": True, "channel": args["channel"], "ts": ts, "message": message})
        if method in ("conversations.replies", "conversations.history"):
            return self._read(method, args)
        if method == "chat.update":
            return Reply(
                body={"ok": True, "channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text")}
            )
        if method == "chat.postEphemeral":
            return Reply(body={"ok": True, "message_ts": self._next_ts()})
        if method == "reactions.add":
            return Reply(body={"ok": True})
        if method == "conversations.open":
            return Reply(body={"ok": True, "channel": {"id": "D" + str(args.get("users", "")).lstrip("UW")}})
        if method == "views.open":
            # A trigger_id is good for 3 seconds and one view; tests name an expired one "expired".
            if not args.get("trigger_id") or args["trigger_id"] == "expired":
                return Reply(body={"ok": False, "error": "expired_trigger_id"})
            return self._view(args.get("view"))
        if method == "views.publish":
            if not str(args.get("user_id") or "").startswith(("U", "W")):
                return Reply(body={"ok": False, "error": "invalid_arguments"})
            self.homes[args["user_id"]] = args.get("view")
            return self._view(args.get("view"))
        if method == "apps.connections.open":
            return Reply(body={"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"})
        answer = self._assistant(method, args) or self._stream(method, args) or self._files(method, args)
        return answer or Reply(body={"ok": False, "error": "unknown_method"})

    # ------------------------------------------------------------ AI apps
    def _assistant(self, method: str, args: dict[str, Any]) -> Reply | None:
        if method not in (
            "assistant.threads.setStatus",
            "assistant.threads.setTitle",
            "assistant.threads.setSuggestedPrompts",
            "agents.sessions.setStatus",
            "agents.sessions.rename",
        ):
            return None
        if not args.get("channel_id") or (not args.get("thread_ts") and method != "agents.sessions.setStatus"):
            return _error("invalid_arguments")
        if method == "assistant.threads.setStatus" and "status" not in args:
            return _error("invalid_arguments")
        if method == "assistant.threads.setStatus" and len(args.get("loading_messages") or []) > 10:
            return _error("invalid_arguments")
        if method == "assistant.threads.setSuggestedPrompts":
            prompts = args.get("prompts")
            valid = isinstance(prompts, list) and all(isinstance(p, dict) and p.get("message") for p in prompts)
            if not valid or not 1 <= len(prompts) <= 4:
                return _error("invalid_arguments")
        if method == "agents.sessions.setStatus" and args.get("status") not in (
            "active",
            "processing",
            "suspended",
            "closed",
        ):
            return _error("invalid_arguments")
        return Reply(body={"ok": True})

    def _stream(self, method: str, args: dict[str, Any]) -> Reply | None:
        if method == "chat.startStream":
            if not args.get("channel") or args["channel"].startswith("CGONE"):
                return _error("channel_not_found")
            if not args.get("thread_ts"):
                return _error("invalid_arguments")
            ts = self._next_ts()
            chunks = list(args.get("chunks") or [])
            self.streams[ts] = {"channel": args["channel"], "thread_ts": args["thread_ts"], "text": "", "open": True}
            self.streams[ts]["chunks"] = chunks
            self.streams[ts]["text"] = args.get("markdown_text", "") + "".join(
                c.get("text", "") for c in chunks if c.get("type") == "markdown_text"
            )
            return Reply(body={"ok": True, "channel": args["channel"], "ts": ts})
        if method in ("chat.appendStream", "chat.stopStream"):
            stream = self.streams.get(str(args.get("ts")))
            if stream is None:
                return _error("message_not_found")
            if not stream["open"]:
                return _error("message_not_in_streaming_state")
            stream["text"] += args.get("markdown_text", "")
            if method == "chat.stopStream":
                stream["open"] = False
            return Reply(body={"ok": True, "channel": stream["channel"], "ts": args["ts"]})
        return None

    # ------------------------------------------------------------ files
    def _files(self, method: str, args: dict[str, Any]) -> Reply | None:
        if method == "files.getUploadURLExternal":
            if not args.get("filename") or not str(args.get("length", "")).isdigit():
                return _error("invalid_arguments")
            file_id = f"F{next(self._ts):04d}"
            self.uploads[file_id] = {"filename": args["filename"], "length": int(args["length"]), "data": None}
            return Reply(
                body={"ok": True, "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}
            )
        if method == "files.completeUploadExternal":
            try:
                files = json.loads(args.get("files") or "")
            except ValueError:
                return _error("invalid_arguments")
            for f in files:
                upload = self.uploads.get(f.get("id"))
                if upload is None or upload["data"] is None:
                    return _error("file_not_found")
                upload.update(shared=args.get("channel_id"), thread_ts=args.get("thread_ts"), title=f.get("title"))
                upload["comment"] = args.get("initial_comment")
            return Reply(body={"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]})
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404)
        if request.content_type == "multipart/form-data":
            form = await request.post()
            field = next(iter(form.values()), None)
            data = field.file.read() if isinstance(field, web.FileField) else str(field or "").encode()
        else:
            data = await request.read()
        if len(data) != upload["length"]:
            return web.Response(status=400, text="length mismatch")  # Slack checks the length it was told
        upload["data"] = data
        return web.Response(text=f"OK - {len(data)}")

    async def _download(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        self.downloads.append(authorization)
        hosted = self.hosted.get(request.match_info["path"])
        if authorization != f"Bearer {TOKEN}":
            # What Slack does without a valid token: its sign-in page, 200 and HTML.
            return web.Response(text="<html><body>Sign in to Slack</body></html>", content_type="text/html")
        if hosted is None:
            return web.Response(status=404)
        data, mimetype = hosted
        return web.Response(body=data, content_type=mimetype)

    def stream_text(self, ts: str) -> str:
        """What a streamed message reads now: its streamed text, or what chat.update last set."""
        updated = [a for a in self.to("chat.update") if a.get("ts") == ts]
        if updated:
            blocks = updated[-1].get("blocks") or []
            markdown = [b.get("text", "") for b in blocks if b.get("type") == "markdown"]
            return markdown[0] if markdown else updated[-1].get("text", "")
        return self.streams[ts]["text"]

    def _read(self, method: str, args: dict[str, Any]) -> Reply:
        """conversations.replies / .history over what was posted here, paged by `limit` and `cursor`.

        Every thread_ts counts as an existing thread (its root is a person's message, which
        the fake never saw); metadata is shown only with include_all_metadata, as Slack does.
        """
        channel = str(args.get("channel") or "")
        if not channel or channel.startswith("CGONE"):
            return Reply(body={"ok": False, "error": "channel_not_found"})
        posted = self.messages[channel]
        if method == "conversations.replies":
            if not args.get("ts"):
                return Reply(body={"ok": False, "error": "invalid_arguments"})
            found = [m for m in posted if args["ts"] in (m["ts"], m.get("thread_ts"))]
        else:
            oldest = float(args.get("oldest") or 0)
            found = [m for m in reversed(posted) if m.get("thread_ts") in (None, m["ts"]) and float(m["ts"]) > oldest]
        if str(args.get("include_all_metadata")).lower() not in ("true", "1"):
            found = [{k: v for k, v in m.items() if k != "metadata"} for m in found]
        start, limit = int(args.get("cursor") or 0), int(args.get("limit") or 100)
        page, more = found[start : start + limit], start + limit < len(found)
        body: dict[str, Any] = {"ok": True, "messages": page, "has_more": more}
        body["response_metadata"] = {"next_cursor": str(start + limit) if more else ""}
        return Reply(body=body)

    def grant(self, code: str, *, team: str, bot_user: str = "U0BOT2", rotating: bool = False) -> None:
        """Make `code` an OAuth code that installs the app in `team` (with token rotation if `rotating`)."""
        self.codes[code] = {"team": team, "bot_user": bot_user, "rotating": rotating}

    def _oauth(self, args: dict[str, Any], authorization: str) -> Reply:
        """oauth.v2.access: a code, or (token rotation) a refresh token, for a bot token; the app by HTTP Basic."""
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if authorization != expected:
            return Reply(body={"ok": False, "error": "invalid_client_id"})
        if args.get("grant_type") == "refresh_token":
            grant = self.refresh_tokens.pop(str(args.get("refresh_token")), None)
            if grant is None:
                return Reply(body={"ok": False, "error": "invalid_refresh_token"})
        else:
            grant = self.codes.pop(str(args.get("code")), None)  # a code is good once
            if grant is None:
                return Reply(body={"ok": False, "error": "invalid_code"})
        n = next(self._ts)
        token = f"xoxb-{grant['team']}-{n}"
        self.tokens[token] = (grant["team"], grant["bot_user"])
        body: dict[str, Any] = {
            "ok": True,
            "app_id": "A0APP",
            "access_token": token,
            "token_type": "bot",
            "scope": "chat:write,commands",
            "bot_user_id": grant["bot_user"],
            "team": {"id": grant["team"], "name": f"Team {grant['team']}"},
            "enterprise": None,
            "is_enterprise_install": False,
        }
        if grant["rotating"]:
            refresh = f"xoxe-1-{grant['team']}-{n}"
            self.refresh_tokens[refresh] = grant
            body.update(refresh_token=refresh, expires_in=self.expires_in)
        return Reply(body=body)

    def _view(self, view: Any) -> Reply:
        if not isinstance(view, dict) or view.get("type") not in ("modal", "home") or not view.get("blocks"):
            return Reply(body={"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": ["view"]}})
        opened = {**view, "id": f"V{next(self._ts):08d}", "hash": "h", "state": {"values": {}}}
        self.views[opened["id"]] = opened
        return Reply(body={"ok": True, "view": opened})

    def _next_ts(self) -> str:
        return f"{1700000000 + next(self._ts)}.000100"

    # ------------------------------------------------------------ Socket Mode
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}})
        pump = asyncio.create_task(self._pump(ws))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.socket_acks.append(json.loads(msg.data))
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self._sockets.discard(ws)
        return ws

    async def _pump(self, ws: web.WebSocketResponse) -> None:
        while True:
            envelope = await self._envelopes.get()
            await ws.send_json(envelope)


def _refused(args: dict[str, Any]) -> str | None:
    """Slack's error for a message's text and blocks past its documented limits, else None.

    `text` holds 40,000 characters (msg_too_long); a section's mrkdwn 3,000; markdown blocks
    12,000 together (https://docs.slack.dev/reference/block-kit/blocks/markdown-block).
    """
    if len(args.get("text") or "") > 40000:
        return "msg_too_long"
    blocks = args.get("blocks")
    if blocks is None:
        return None
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    markdown = 0
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "markdown":
            if not isinstance(block.get("text"), str) or not block["text"]:
                return "invalid_blocks"
            markdown += len(block["text"])
        elif kind == "section":
            text = block.get("text") or {}
            if text.get("type") not in ("mrkdwn", "plain_text") or not 0 < len(text.get("text") or "") <= 3000:
                return "invalid_blocks"
        elif kind != "actions":
            return "invalid_blocks"
    return "invalid_blocks" if markdown > 12000 else None


def _error(error: str) -> Reply:
    return Reply(body={"ok": False, "error": error})


def rate_limited(retry_after: int = 0) -> Reply:
    """Slack's 429: `ratelimited`, and how long to wait in Retry-After."""
    return Reply(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": str(retry_after)})


# ---------------------------------------------------------------- what Slack sends


def signed(
    body: str, *, secret: str = SECRET, timestamp: int | None = None, content_type: str = "application/json"
) -> dict[str, str]:
    """Headers for `body` signed the way Slack signs (v0 HMAC-SHA256 of `v0:ts:body`)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature, "Content-Type": content_type}


def event_body(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """An Events API callback carrying `event`."""
    return {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0APP",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
    }


def mention(
    text: str, *, ts: str, user: str = "U1", channel: str = "C1", thread_ts: str | None = None
) -> dict[str, Any]:
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(
    text: str, *, ts: str, user: str = "U1", channel: str = "C1", thread_ts: str | None = None, **extra: Any
) -> dict[str, Any]:
    event = {"type": "message", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts, "team": TEAM}
    event["channel_type"] = "im" if channel.startswith("D") else "channel"
    if thread_ts:
        event["thread_ts"] = thread_ts
    event.update(extra)
    return event


def assistant_thread(
    kind: str = "assistant_thread_started",
    *,
    channel: str = "D1",
    thread_ts: str,
    user: str = "U1",
    context_channel: str | None = "C1",
) -> dict[str, Any]:
    """An assistant_thread_started / _context_changed event (docs.slack.dev/reference/events)."""
    context = {"channel_id": context_channel, "team_id": TEAM, "enterprise_id": None} if context_channel else {}
    return {
        "type": kind,
        "assistant_thread": {"user_id": user, "context": context, "channel_id": channel, "thread_ts": thread_ts},
        "event_ts": thread_ts,
    }


def click(
    *,
    user: str,
    channel: str,
    message_ts: str,
    thread_ts: str | None,
    value: str,
    approved: bool = True,
    action_ts: str,
    action_id: str | None = None,
    trigger_id: str = "1.2.3",
) -> str:
    """A block_actions payload for a click on a button (approval unless `action_id` says), form-encoded as Slack posts it."""
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM},
        "api_app_id": "A0APP",
        "token": "legacy",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
            **({"thread_ts": thread_ts} if thread_ts else {}),
        },
        "trigger_id": trigger_id,
        "channel": {"id": channel, "name": "general"},
        "message": {
            "type": "message",
            "ts": message_ts,
            "bot_id": BOT_ID,
            **({"thread_ts": thread_ts} if thread_ts else {}),
        },
        "response_url": "https://hooks.slack.invalid/actions/1",
        "actions": [
            {
                "action_id": action_id or ("frontdesk_approve" if approved else "frontdesk_deny"),
                "block_id": "frontdesk_approval" if action_id is None else "frontdesk_choices",
                "type": "button",
                "value": value,
                "action_ts": action_ts,
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def submission(view: dict[str, Any], *, user: str, values: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The view_submission payload Slack posts when `user` submits `view` (as views.open returned it)."""
    state = {"values": values or {}}
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM},
        "api_app_id": "A0APP",
        "token": "legacy",
        "trigger_id": "2.3.4",
        "view": {**view, "state": state, "team_id": TEAM, "app_id": "A0APP", "bot_id": BOT_ID},
        "response_urls": [],
    }


def home_opened(user: str) -> dict[str, Any]:
    """An app_home_opened event: `user` opened the app's Home tab."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": "D" + user.lstrip("UW"),
        "tab": "home",
        "event_ts": "1.0",
    }


def command(text: str, *, user: str = "U1", channel: str = "C1", name: str = "/frontdesk") -> str:
    """A slash command as Slack posts it (form-encoded, signed like every request)."""
    return urlencode(
        {
            "token": "legacy",
            "team_id": TEAM,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": "someone",
            "command": name,
            "text": text,
            "api_app_id": "A0APP",
            "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.invalid/commands/1",
            "trigger_id": "3.4.5",
        }
    )


def shortcut(
    *, user: str, channel: str, ts: str, text: str, author: str, thread_ts: str | None = None
) -> dict[str, Any]:
    """A message shortcut ("Send to agent") payload: `user` chose it on `author`'s message."""
    posted = {
        "type": "message",
        "user": author,
        "ts": ts,
        "text": text,
        **({"thread_ts": thread_ts} if thread_ts else {}),
    }
    return {
        "type": "message_action",
        "callback_id": "frontdesk_send",
        "trigger_id": "4.5.6",
        "action_ts": f"{ts}9",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM},
        "channel": {"id": channel, "name": "general"},
        "message": posted,
        "message_ts": ts,
        "response_url": "https://hooks.slack.invalid/actions/2",
        "token": "legacy",
    }
