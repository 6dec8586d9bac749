"""The Slack Web API as this channel uses it: one call at a time, every failure a DeliveryFailed.

No SDK retry handler is installed: a `chat.postMessage` repeated after a lost
answer is a second message in the thread, so the outbox — not the SDK — decides
what may be tried again. The mapping (https://docs.slack.dev/apis/web-api/#errors):

- HTTP 429 (or `ratelimited`): retryable after Retry-After seconds;
- HTTP 5xx, `service_unavailable`, `request_timeout`: retryable (Slack did not act);
- `internal_error`, `fatal_error`: Slack says "some aspect of the operation may
  have succeeded", so a post is ambiguous; an idempotent call is retryable;
- no connection at all: retryable; no answer after sending: a post is ambiguous;
- any other `ok: false` (channel_not_found, not_in_channel, invalid_auth, ...): permanent.
"""

from __future__ import annotations

import asyncio
import base64
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from gateway.errors import DeliveryFailed
from gateway.retry import retry_after

_RETRYABLE = {"ratelimited", "service_unavailable", "request_timeout"}
_MAYBE_DONE = {"internal_error", "fatal_error"}


@dataclass(frozen=True)
class Me:
    """Who this app is in Slack, from auth.test."""

    team: str
    user_id: str  # the bot user: events it causes are ignored
    bot_id: str | None = None


# The workspace a request or a send is for, as (enterprise_id, team_id): set where one starts
# (the inbound route, a bolt middleware, `send`), read by `call` to pick that workspace's token.
WORKSPACE: ContextVar[tuple[str | None, str | None] | None] = ContextVar("slack_workspace", default=None)


@dataclass(frozen=True)
class Installed:
    """The app's bot in one workspace (an OAuth installation)."""

    token: str
    me: Me


class Tokens(Protocol):
    """Installations by workspace (channels.slack.oauth); None where the app is not installed."""

    async def find(self, enterprise_id: str | None, team_id: str | None) -> Installed | None: ...


class SlackApi:
    """Calls Web API methods through slack_sdk's async client and translates its errors.

    With `tokens` (OAuth installs), a call made for a workspace (`WORKSPACE`) uses that
    workspace's bot token; without one installed, the client's own (SLACK_BOT_TOKEN).
    """

    def __init__(self, client: AsyncWebClient, tokens: Tokens | None = None) -> None:
        self.client = client
        self.tokens = tokens
        self._me: Me | None = None
        self._me_lock = asyncio.Lock()

    async def call(self, method: str, *, posts: bool = False, form: bool = False, **args: Any) -> dict[str, Any]:
        """Call `method` with a JSON body (`form`: form-encoded, for methods that take no JSON);
        `posts`: whether repeating it could show something twice."""
        installed = await self._installed()
        headers = {"Authorization": f"Bearer {installed.token}"} if installed else None
        body = {k: v for k, v in args.items() if v is not None}
        if form:
            return await self._send(method, posts, data=body, headers=headers)
        return await self._send(method, posts, json=body, headers=headers)

    async def exchange(self, client_id: str, client_secret: str, **form: str) -> dict[str, Any]:
        """oauth.v2.access: a code or a refresh token for tokens; the app authenticates itself (HTTP Basic)."""
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        return await self._send("oauth.v2.access", False, data=form, headers={"Authorization": f"Basic {basic}"})

    async def bearer(self) -> str | None:
        """The current workspace's installed bot token, if it has one (else the client's own applies)."""
        installed = await self._installed()
        return installed.token if installed else None

    async def _installed(self) -> Installed | None:
        workspace = WORKSPACE.get()
        if self.tokens is None or workspace is None:
            return None
        installed = await self.tokens.find(*workspace)
        if installed is None and not self.client.token:
            raise DeliveryFailed(f"the app is not installed in workspace {workspace[1] or workspace[0]}")
        return installed

    async def _send(self, method: str, posts: bool, **request: Any) -> dict[str, Any]:
        try:
            response = await self.client.api_call(method, **request)
        except SlackApiError as exc:
            raise _api_failure(method, exc, posts) from exc
        except aiohttp.ClientConnectorError as exc:
            raise DeliveryFailed(f"{method}: cannot reach Slack: {exc}", retryable=True) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise DeliveryFailed(f"{method}: timed out connecting to Slack", retryable=True) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The request may have left: Slack could have acted on it without our hearing back.
            reason = f"{method}: no answer from Slack ({type(exc).__name__})"
            raise DeliveryFailed(reason, ambiguous=posts, retryable=not posts) from exc
        return response.data if isinstance(response.data, dict) else {}

    async def me(self) -> Me:
        """Who the app is: the installation's bot for the current workspace, else auth.test, asked once per process."""
        installed = await self._installed()
        if installed is not None:
            return installed.me
        if self._me is None:
            async with self._me_lock:
                if self._me is None:
                    data = await self.call("auth.test")
                    self._me = Me(team=data["team_id"], user_id=data["user_id"], bot_id=data.get("bot_id"))
        return self._me


def _api_failure(method: str, exc: SlackApiError, posts: bool) -> DeliveryFailed:
    response = exc.response
    status = getattr(response, "status_code", None)
    data = response.data if isinstance(getattr(response, "data", None), dict) else {}
    error = data.get("error") or f"HTTP {status}"
    reason = f"{method}: {error}"
    if status == 429 or error == "ratelimited":
        return DeliveryFailed(
            reason, status=429, retryable=True, retry_after=retry_after(getattr(response, "headers", None))
        )
    if (status or 0) >= 500 or error in _RETRYABLE:
        return DeliveryFailed(reason, status=status, retryable=True)
    if error in _MAYBE_DONE:
        return DeliveryFailed(reason, status=status, ambiguous=posts, retryable=not posts)
    return DeliveryFailed(reason, status=status)
