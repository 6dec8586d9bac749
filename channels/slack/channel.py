"""The Slack channel: bolt's AsyncApp in, slack_sdk's async Web API client out."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from channels.slack.api import WORKSPACE, Me, SlackApi
from channels.slack.approvals import DECISION_VIEW, Approvals
from channels.slack.assistant import Assistant
from channels.slack.commands import SEND_SHORTCUT, Commands
from channels.slack.files import Files
from channels.slack.inbound import OUTCOME, Inbound, event_callback
from channels.slack.interactive import CHOICE_ACTION
from channels.slack.oauth import Installations, oauth_router, workspace_of
from channels.slack.outbound import APPROVE, DENY, Outbound
from channels.slack.settings import SlackAgentSettings
from channels.slack.status import StatusBoard
from channels.slack.stream import Streamer
from gateway.errors import DeliveryFailed, Malformed, Unavailable
from gateway.messages import InboundMessage, OutboundMessage, Progress, Sent
from gateway.protocols import ChannelBase, ChannelContext
from gateway.settings import plugin_settings, secret_values

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.authorization import AuthorizeResult

log = structlog.get_logger("frontdesk.slack")


class SlackChannel(ChannelBase):
    """Answers POST /slack/events (and Socket Mode); posts through the Web API."""

    name = "slack"
    # chat.postMessage has no idempotency key: a post repeated after a lost answer
    # is a second message in the thread.
    resend_safe = False
    # A conversation is team/channel/thread: a decision counts only in the team and place it was posted.
    decisions_where_asked = True

    def __init__(self, context: ChannelContext) -> None:
        settings = context.settings
        # Read first: a bad value stops start-up (ConfigError) before anything is opened.
        self.agentic = agentic = plugin_settings(SlackAgentSettings, settings)
        inbox = context.inbox(self.name)
        self.reaction = settings.slack_ack_reaction.strip(":")
        self.app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else None
        # Several during a rotation (comma-separated): a request signed with any of them is taken.
        secrets = secret_values(settings.slack_signing_secret)
        # The factory checked there is SLACK_BOT_TOKEN, or OAuth installs (FRONTDESK_SLACK_CLIENT_ID/SECRET), or both.
        self.token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
        # One session for every call (bolt copies it into its per-request clients); with
        # a session of its own, slack_sdk applies the session's timeout, not its own.
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.slack_timeout))
        web: dict[str, Any] = dict(
            base_url=settings.slack_api_url,
            session=self.session,
            timeout=math.ceil(settings.slack_timeout),
            retry_handlers=[],  # see channels.slack.api: the outbox decides what is retried
        )
        self.api = SlackApi(AsyncWebClient(token=self.token, **web))
        state = context.state(self.name)
        self.installations: Installations | None = None
        self.oauth: APIRouter | None = None
        if agentic.client_id and agentic.client_secret:
            secret_value = agentic.client_secret.get_secret_value()
            self.installations = Installations(state, self.api, agentic.client_id, secret_value)
            self.api.tokens = self.installations
            self.oauth = oauth_router(self.installations, state, agentic.scopes, agentic.state_ttl, settings.public_url)
        self.assistant = Assistant(self.api, inbox, state, agentic, self._spawn)
        self.status = (
            StatusBoard(
                self.api,
                state,
                sessions=agentic.agent_sessions,
                everywhere=agentic.status == "all",
                spawn=self._spawn,
            )
            if agentic.status != "off"
            else None
        )
        self.files = Files(
            self.api, self.session, self.token, state, agentic, api_url=settings.slack_api_url, ttl=settings.dedupe_ttl
        )
        self.inbound = Inbound(inbox, self._me, self._react, self.assistant)
        self.approvals = Approvals(self.api, inbox, state, self.inbound, agentic.ask_reason, settings.dedupe_ttl)
        self.outbound = Outbound(self.api, inbox, state, settings.dedupe_ttl, self.approvals)
        self.outbound.files = self.files
        self.outbound.stream = Streamer(self.api, state, agentic, settings.dedupe_ttl) if agentic.stream else None
        self.verifies = bool(secrets)
        self.verifiers = [SignatureVerifier(s) for s in secrets]  # the check bolt's request verification makes
        self.commands = Commands(self.api, inbox, self.inbound, self._me)
        # For bolt's app, built when it is first asked for (`app`).
        self._web, self._bolt_secret = web, secrets[0] if secrets else ""
        self._tasks: set[asyncio.Task] = set()

    @functools.cached_property
    def app(self) -> AsyncApp:
        """Bolt's app, for the HTTP route's interactivity and Socket Mode: built when one of them
        first asks, so a worker, which only sends, neither imports nor builds it (bolt is about
        8 MiB of a worker's RSS; benchmarks/NOTES.md, "Worker memory")."""
        from slack_bolt.async_app import AsyncApp

        # Bolt passes arguments by name (`self` included), reading this signature; no return
        # annotation, which it would resolve among this module's names, where bolt's are not.
        async def authorize(context):
            return await self._authorize(context)

        app = AsyncApp(
            name="frontdesk",
            logger=logging.getLogger("frontdesk.slack.bolt"),
            client=AsyncWebClient(**self._web),
            authorize=authorize,
            signing_secret=self._bolt_secret,
            # Our route checks every request against all the secrets before bolt sees it (bolt
            # knows one secret); Socket Mode needs no signature, and alone mounts no HTTP route.
            request_verification_enabled=False,
            # The listeners only enqueue (one Redis script), so they finish before the
            # answer goes back, and a failure to enqueue is an error Slack retries.
            process_before_response=True,
            # Built-in steps that do nothing here, each a cost on every event: from_event
            # already drops our own messages (and any bot's), and we use neither workflow
            # functions nor bolt's assistant-thread helpers (say, set_status, ...): assistant
            # threads are `channels.slack.assistant`, their status comes from the worker.
            ignoring_self_events_enabled=False,
            attaching_function_token_enabled=False,
            attaching_conversation_kwargs_enabled=False,
        )
        # Bolt runs the first listener that matches: the specific events before the catch-all.
        app.event("app_home_opened")(self._on_home)
        app.event("app_uninstalled")(self._on_lifecycle)
        app.event("tokens_revoked")(self._on_lifecycle)
        app.event(re.compile(".*"))(self.inbound.on_event)
        app.action(re.compile(f"^({APPROVE}|{DENY})$"))(self.approvals.on_click)
        app.action(CHOICE_ACTION)(self.inbound.on_click)  # a choice's answer, through from_click
        app.view(DECISION_VIEW)(self.approvals.on_submit)
        app.command(re.compile("^/"))(self.commands.on_command)  # the manifest's one command
        app.shortcut(SEND_SHORTCUT)(self.commands.on_shortcut)
        return app

    # ------------------------------------------------------------ inbound
    def router(self) -> APIRouter | None:
        if not self.verifies:
            return None
        from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler

        handler = AsyncSlackRequestHandler(self.app)

        async def events(request: Request) -> Response:
            """Events API and interactivity: verified, enqueued, then answered (Slack wants it within 3 s)."""
            body = await request.body()
            if not self._signed(request, body):
                return JSONResponse({"error": "invalid request"}, status_code=401)  # bolt's answer
            # An event callback (every mention, DM and reply) goes straight to the listener
            # bolt would have run: through bolt's dispatch it cost about 40 % more CPU per event
            # than the whole request does without it (benchmarks/, scenario 1) — a Web API client
            # built per request, every listener argument built per call, the request and response
            # copied. Everything else (url_verification, interactivity) and Socket Mode go through bolt.
            callback = event_callback(body, request.headers.get("content-type"))
            if callback is not None:
                WORKSPACE.set(workspace_of(callback))
                if _event_type(callback) in LIFECYCLE:
                    await self._lifecycle(callback)
                    return Response(status_code=200)
                if not await self._installed():
                    log.info("an event from a workspace the app is not installed in", workspace=WORKSPACE.get())
                    return Response(status_code=200)  # nothing to answer with: no token there
            if callback is not None and _event_type(callback) == "app_home_opened":
                self._home(callback)
                return Response(status_code=200)
            if callback is not None:
                await self.inbound.event(callback)  # enqueued before the 200, as process_before_response does
                return Response(status_code=200)
            outcome: dict[str, Exception] = {}
            try:
                response = await handler.handle(request, {OUTCOME: outcome})
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
                # A body bolt cannot read: JSON errors, or fields of the wrong type, which bolt
                # trips over while building its request — before it checks the signature.
                raise Malformed(f"unreadable Slack request: {exc}") from exc
            if "error" in outcome:
                raise outcome["error"]  # Redis or auth.test down: 503 with Retry-After, and Slack retries
            return response

        router = APIRouter(tags=["slack"])
        router.add_api_route("/slack/events", events, methods=["POST"], summary="Slack Events API and interactivity")
        if self.oauth is not None:
            router.include_router(self.oauth)
        return router

    async def serve(self, stop: asyncio.Event) -> None:
        """Socket Mode (SLACK_APP_TOKEN): the same listeners, fed over Slack's WebSocket."""
        if self.app_token is None:
            return
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(
            self.app, app_token=self.app_token, logger=logging.getLogger("frontdesk.slack.socket")
        )
        try:
            await handler.connect_async()
            log.info("slack socket mode connected")
            await stop.wait()
        finally:
            await handler.close_async()

    def _signed(self, request: Request, body: bytes) -> bool:
        timestamp = request.headers.get("x-slack-request-timestamp", "0")
        signature = request.headers.get("x-slack-signature", "")
        try:  # no verifier (Socket Mode only) never gets here: no route is mounted
            return any(verifier.is_valid(body, timestamp, signature) for verifier in self.verifiers)
        except ValueError:  # a timestamp that is not a number
            return False

    async def _me(self) -> Me:
        """Who we are (a cached auth.test); Unavailable when Slack cannot say, so the request is retried.

        Bolt's own single-team step answers 200 when auth.test fails, which would
        drop the event; failing instead makes Slack send it again.
        """
        try:
            return await self.api.me()
        except DeliveryFailed as exc:
            raise Unavailable(f"Slack auth.test failed: {exc}") from exc

    async def _authorize(self, context) -> AuthorizeResult:
        """Bolt's authorize step: the request's workspace noted for every call its listeners make, and who we are there."""
        WORKSPACE.set((context.enterprise_id, context.team_id))
        try:
            me = await self._me()
            installed = (
                await self.installations.find(context.enterprise_id, context.team_id) if self.installations else None
            )
        except Unavailable as error:
            outcome = context.get(OUTCOME)
            if outcome is not None:
                outcome["error"] = error
            raise
        token = installed.token if installed else self.token
        from slack_bolt.authorization import AuthorizeResult  # bolt is loaded: only its app calls this

        return AuthorizeResult(
            enterprise_id=context.enterprise_id,
            team_id=me.team,
            bot_user_id=me.user_id,
            bot_id=me.bot_id,
            bot_token=token,
        )

    async def _installed(self) -> bool:
        """Whether the current workspace has a token: an installation, or the single SLACK_BOT_TOKEN."""
        if self.installations is None or self.token:
            return True
        workspace = WORKSPACE.get() or (None, None)
        return await self.installations.find(*workspace) is not None

    async def _on_lifecycle(self, ack, body: dict[str, Any]) -> None:
        await self._lifecycle(body)
        await ack()

    async def _lifecycle(self, body: dict[str, Any]) -> None:
        """app_uninstalled, tokens_revoked (of the bot): the workspace's installation goes."""
        event = body.get("event")
        event = event if isinstance(event, dict) else {}
        tokens = event.get("tokens")
        revoked_bot = isinstance(tokens, dict) and bool(tokens.get("bot"))
        if self.installations is not None and (event.get("type") == "app_uninstalled" or revoked_bot):
            await self.installations.remove(*workspace_of(body))

    async def _on_home(self, ack, body: dict[str, Any]) -> None:
        self._home(body)
        await ack()

    def _home(self, body: dict[str, Any]) -> None:
        """Someone opened the app's Home tab: publish what waits on them, off the request path."""
        event = body.get("event")
        event = event if isinstance(event, dict) else {}
        user = event.get("user")
        if event.get("tab", "home") == "home" and isinstance(user, str) and user:
            self._spawn(self._publish_home(user))

    async def _publish_home(self, user: str) -> None:
        try:
            await self.approvals.home(user)
        except (DeliveryFailed, Unavailable) as exc:
            log.warning("the Home tab was not published", user=user, error=str(exc))

    def _react(self, channel: str, ts: str) -> None:
        """Acknowledge a received message with a reaction, off the request path."""
        if not self.reaction:
            return
        self._spawn(self._add_reaction(channel, ts))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` off the request (or step) path; aclose waits for it a little."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add_reaction(self, channel: str, ts: str) -> None:
        try:
            await self.api.call("reactions.add", channel=channel, timestamp=ts, name=self.reaction)
        except DeliveryFailed as exc:  # already_reacted, missing scope: never worth more than a line
            log.info("acknowledgement reaction not added", channel=channel, ts=ts, error=str(exc))

    async def complete(self, message: InboundMessage) -> InboundMessage | None:
        """In the worker: fetch the files a message carries (the bot token, a size cap)."""
        token = WORKSPACE.set((None, message.reply_to.get("team")))
        try:
            return await self.files.fetched(message)
        finally:
            WORKSPACE.reset(token)

    def progress(self, update: Progress) -> None:
        """The thread status while a step runs (gateway.protocols.ShowsProgress)."""
        if self.status is not None:
            # In a context of its own: the calls it spawns use the thread's workspace, the worker's stays unset.
            contextvars.copy_context().run(self._progress, update)

    def _progress(self, update: Progress) -> None:
        WORKSPACE.set((None, update.reply_to.get("team")))
        assert self.status is not None
        self.status.progress(update)

    # ------------------------------------------------------------ outbound
    async def send(self, message: OutboundMessage) -> Sent:
        _for_workspace(message)
        return await self.outbound.send(message)

    async def recover(self, message: OutboundMessage) -> Sent | None:
        """A send a stopped sender left unrecorded, read back from Slack (see `lookup`)."""
        _for_workspace(message)
        return await self.outbound.recover(message)

    async def aclose(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.session.close()


def _event_type(callback: dict[str, Any]) -> str | None:
    event = callback.get("event")
    return event.get("type") if isinstance(event, dict) else None


LIFECYCLE = {"app_uninstalled", "tokens_revoked"}


def _team_of(address: str) -> str | None:
    team, sep, _ = address.partition("/")
    return team if sep and team.startswith(("T", "E")) else None


def _for_workspace(message: OutboundMessage) -> None:
    """The workspace whose token sends `message`: where the person wrote, else the team a route names (T…/C…)."""
    team = (message.reply_to or {}).get("team") or _team_of(message.address)
    WORKSPACE.set((message.reply_to.get("enterprise"), team) if team else None)
