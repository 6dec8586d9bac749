"""The Slack channel's own settings (beside the core's SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from gateway.settings import PluginSettings


def _env(name: str, default=None, **kw):
    return Field(default, validation_alias=AliasChoices(name), **kw)


class SlackOptions(PluginSettings):
    """Approvals with a reason, OAuth install for any workspace."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Which approval buttons open a modal asking why: "deny" (the default), "both", or "none".
    reason: Literal["deny", "both", "none"] = _env("FRONTDESK_SLACK_ASK_REASON", "deny")
    # OAuth install (`/slack/install`): the app's credentials, from its Basic Information page.
    # Not bolt's SLACK_CLIENT_ID / SLACK_CLIENT_SECRET: with those set, bolt starts an OAuth flow
    # of its own, with installations in files under $HOME.
    client_id: str | None = _env("FRONTDESK_SLACK_CLIENT_ID")
    client_secret: SecretStr | None = _env("FRONTDESK_SLACK_CLIENT_SECRET")
    # The bot scopes asked for at install (the manifest's list, comma-separated).
    scopes: str = _env(
        "FRONTDESK_SLACK_SCOPES",
        "app_mentions:read,channels:history,groups:history,im:history,im:read,im:write,chat:write,"
        "reactions:write,commands,mpim:history,assistant:write,files:read,files:write",
    )
    # Seconds an install link stays good (the `state` it carries).
    state_ttl: int = _env("FRONTDESK_SLACK_STATE_TTL", 600, ge=30)
