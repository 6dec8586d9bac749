"""Any workspace: the OAuth install, installations in Redis, the right token per workspace, rotation.

On with FRONTDESK_SLACK_CLIENT_ID and FRONTDESK_SLACK_CLIENT_SECRET (the single-token setup, SLACK_BOT_TOKEN,
works as before, alone or beside it: a workspace without an installation uses it).

- `GET /slack/install` redirects to Slack's authorize page with a `state` kept in
  Redis for FRONTDESK_SLACK_STATE_TTL seconds and in a cookie of the browser that
  asked, so a link made for someone else's browser is refused (login CSRF).
- `GET /slack/oauth_redirect` takes the state once (a second use is refused), then
  trades the code for tokens (`oauth.v2.access`) and stores the installation under
  `install:<enterprise_id>:<team_id>` (an org-wide install: its enterprise only).
- `find` gives each call its workspace's bot token (see `channels.slack.api.WORKSPACE`);
  a rotating token (token rotation on: `expires_in` and a `refresh_token`) is renewed
  with `grant_type=refresh_token` when it has less than `RENEW_BEFORE` seconds left,
  one process at a time (a short lock in Redis).
- `app_uninstalled` and `tokens_revoked` (of the bot) delete the installation.

https://docs.slack.dev/authentication/installing-with-oauth,
https://docs.slack.dev/authentication/using-token-rotation
"""

from __future__ import annotations

import json
import secrets
import time
from html import escape
from typing import Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from channels.slack.api import Installed, Me, SlackApi
from gateway.errors import DeliveryFailed
from gateway.protocols import ChannelState

log = structlog.get_logger("frontdesk.slack")
AUTHORIZE_URL = "https://slack.com/oauth/v2/authorize"
COOKIE = "frontdesk-slack-oauth-state"
RENEW_BEFORE = 300  # seconds: a rotating token is renewed this long before it expires
LOCK_TTL = 30


class Installations:
    """The app's installations, by enterprise and team, in the channel's Redis keys."""

    def __init__(self, state: ChannelState, api: SlackApi, client_id: str, client_secret: str) -> None:
        self.state = state
        self.api = api
        self.client_id = client_id
        self.client_secret = client_secret

    async def find(self, enterprise_id: str | None, team_id: str | None) -> Installed | None:
        """The installation serving this workspace (the team's own, else its organisation's), renewed if due."""
        for key in dict.fromkeys([_key(enterprise_id, team_id), _key(enterprise_id, None), _key(None, team_id)]):
            if key == _key(None, None):
                continue
            raw = await self.state.get(key)
            if raw is not None:
                return _installed(await self._fresh(key, json.loads(raw)), team_id)
        return None

    async def install(self, code: str, redirect_uri: str) -> dict[str, Any]:
        """Trade an OAuth code for the bot's token and store the installation."""
        data = await self.api.exchange(self.client_id, self.client_secret, code=code, redirect_uri=redirect_uri)
        if data.get("token_type") != "bot" or not data.get("access_token"):
            raise DeliveryFailed("oauth.v2.access returned no bot token")
        team = data.get("team") or {}
        enterprise = data.get("enterprise") or {}
        record = {
            "team_id": None if data.get("is_enterprise_install") else team.get("id"),
            "enterprise_id": enterprise.get("id"),
            "team_name": team.get("name") or enterprise.get("name") or "",
            "bot_token": data["access_token"],
            "bot_user_id": data.get("bot_user_id", ""),
            "app_id": data.get("app_id"),
            "scope": data.get("scope", ""),
            "installed_at": time.time(),
            **_rotation(data),
        }
        await self.state.set(_key(record["enterprise_id"], record["team_id"]), json.dumps(record))
        log.info("slack app installed", team=record["team_id"], enterprise=record["enterprise_id"])
        return record

    async def remove(self, enterprise_id: str | None, team_id: str | None) -> bool:
        """Forget the workspace's installation (app_uninstalled, tokens_revoked)."""
        removed = await self.state.delete(_key(enterprise_id, team_id))
        if not removed and enterprise_id:
            removed = await self.state.delete(_key(enterprise_id, None))
        log.info("slack installation removed", team=team_id, enterprise=enterprise_id, found=removed)
        return removed

    async def _fresh(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record, its token renewed first when it expires within RENEW_BEFORE seconds."""
        expires = record.get("expires_at")
        if not expires or not record.get("refresh_token") or expires - time.time() > RENEW_BEFORE:
            return record
        if not await self.state.set(f"renewing:{key}", "1", ttl=LOCK_TTL, only_new=True):
            return record  # another process renews it; this token still has RENEW_BEFORE seconds or so
        try:
            data = await self.api.exchange(
                self.client_id, self.client_secret, grant_type="refresh_token", refresh_token=record["refresh_token"]
            )
            renewed = {**record, "bot_token": data["access_token"], **_rotation(data)}
            await self.state.set(key, json.dumps(renewed))
            log.info("slack token renewed", installation=key)
            return renewed
        except (DeliveryFailed, KeyError) as exc:
            if expires <= time.time():
                raise DeliveryFailed(f"the workspace's token expired and could not be renewed: {exc}") from exc
            log.warning("slack token not renewed yet; the current one still works", installation=key, error=str(exc))
            return record
        finally:
            await self.state.delete(f"renewing:{key}")


def oauth_router(installations: Installations, state: ChannelState, scopes: str, ttl: int, public_url: str | None):
    """`/slack/install` and `/slack/oauth_redirect`."""

    def redirect_uri(request: Request) -> str:
        base = public_url.rstrip("/") if public_url else str(request.base_url).rstrip("/")
        return f"{base}/slack/oauth_redirect"

    async def install(request: Request) -> Response:
        """Start an install: to Slack's authorize page, with a state this browser must bring back."""
        token = secrets.token_urlsafe(24)
        await state.set(f"oauth_state:{token}", "1", ttl=ttl)
        query = {
            "client_id": installations.client_id,
            "scope": scopes,
            "state": token,
            "redirect_uri": redirect_uri(request),
        }
        response = RedirectResponse(f"{AUTHORIZE_URL}?{urlencode(query)}", status_code=302)
        secure = request.url.scheme == "https" or bool(public_url and public_url.startswith("https"))
        response.set_cookie(COOKIE, token, max_age=ttl, httponly=True, secure=secure, samesite="lax")
        return response

    async def oauth_redirect(request: Request) -> Response:
        """Slack sends the person back here: the state checked (once), the code traded, the installation kept."""
        query = request.query_params
        token = query.get("state") or ""
        if not token or request.cookies.get(COOKIE) != token or not await state.delete(f"oauth_state:{token}"):
            return _page(400, "This install link has expired or was not started here. Start again from /slack/install.")
        if query.get("error"):
            return _page(200, f"The app was not installed ({query['error']}).")
        if not query.get("code"):
            return _page(400, "Slack sent no code; start again from /slack/install.")
        try:
            record = await installations.install(query["code"], redirect_uri(request))
        except DeliveryFailed as exc:
            log.warning("slack install failed", error=str(exc))
            return _page(502, "Slack did not complete the install; start again from /slack/install.")
        response = _page(200, f"frontdesk is installed in {record['team_name'] or 'your workspace'}.")
        response.delete_cookie(COOKIE)
        return response

    router = APIRouter(tags=["slack"])
    router.add_api_route("/slack/install", install, methods=["GET"], summary="Install the Slack app (OAuth)")
    router.add_api_route("/slack/oauth_redirect", oauth_redirect, methods=["GET"], summary="Slack's OAuth redirect")
    return router


def workspace_of(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(enterprise_id, team_id) of any Slack request: an event callback, an interaction, a command."""
    team, enterprise = body.get("team_id"), body.get("enterprise_id")
    if isinstance(body.get("team"), dict):
        team = team or body["team"].get("id")
    if isinstance(body.get("enterprise"), dict):
        enterprise = enterprise or body["enterprise"].get("id")
    if not team and isinstance(body.get("view"), dict):
        team = body["view"].get("team_id")
    return (enterprise if isinstance(enterprise, str) and enterprise else None), (
        team if isinstance(team, str) and team else None
    )


def _key(enterprise_id: str | None, team_id: str | None) -> str:
    return f"install:{enterprise_id or '-'}:{team_id or '-'}"


def _rotation(data: dict[str, Any]) -> dict[str, Any]:
    """A rotating token's refresh token and expiry (absent without token rotation)."""
    if not data.get("refresh_token") or not isinstance(data.get("expires_in"), int):
        return {}
    return {"refresh_token": data["refresh_token"], "expires_at": time.time() + data["expires_in"]}


def _installed(record: dict[str, Any], team_id: str | None) -> Installed:
    team = team_id or record.get("team_id") or record.get("enterprise_id") or ""
    return Installed(token=record["bot_token"], me=Me(team=team, user_id=record.get("bot_user_id", "")))


def _page(status: int, text: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>frontdesk</title><p>{escape(text)}</p>", status_code=status)
