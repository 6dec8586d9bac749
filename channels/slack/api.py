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
from dataclasses import dataclass
from typing import Any

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


class SlackApi:
    """Calls Web API methods through slack_sdk's async client and translates its errors."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._me: Me | None = None
        self._me_lock = asyncio.Lock()

    async def call(self, method: str, *, posts: bool = False, form: bool = False, **args: Any) -> dict[str, Any]:
        """Call `method` with a JSON body (`form`: form-encoded, for methods that take no JSON);
        `posts`: whether repeating it could show something twice."""
        body = {k: v for k, v in args.items() if v is not None}
        try:
            if form:
                response = await self.client.api_call(method, data=body)
            else:
                response = await self.client.api_call(method, json=body)
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
        """auth.test, asked once per process (bolt's single-team authorization does the same)."""
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
