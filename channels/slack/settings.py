"""The Slack channel's own settings (FRONTDESK_SLACK_*), beside the core's.

The tokens, the API URL and the acknowledgement reaction stay in `gateway.settings`, where
they always were; what came with assistant threads, status, streaming, files, approvals
with a reason and OAuth installs is a `PluginSettings` of the channel's own, read from the
same environment and .env.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from gateway.settings import PluginSettings


class SlackAgentSettings(PluginSettings):
    """The Slack channel's settings for assistant threads, status, streaming, files, approvals and installs."""

    model_config = SettingsConfigDict(env_prefix="FRONTDESK_SLACK_", extra="ignore")

    # Use Slack's agent-session methods (agents.sessions.setStatus / rename) instead of
    # assistant.threads.setStatus / setTitle: for an app declared as an agent.
    agent_sessions: bool = False
    # Show what the thread is doing while a step runs: in assistant threads, in every Slack
    # thread (Slack allows setStatus in channels with chat:write since 2026-03), or nowhere.
    status: Literal["assistant", "all", "off"] = "assistant"
    stream: bool = False  # final answers and questions as chat.startStream / appendStream / stopStream
    stream_chunk: int = Field(600, ge=50, le=12000)  # characters per chat.appendStream
    stream_appends: int = Field(10, ge=1, le=100)  # at most this many appends per answer (Tier 4: 100+/min)
    file_max_bytes: int = Field(10 * 1024 * 1024, ge=0)  # inbound files above this are not fetched
    upload_over: int = Field(12000, ge=0)  # a longer answer goes up as a file instead (0: never)
    # Which approval buttons open a modal asking why: "deny" (the default), "both", or "none".
    ask_reason: Literal["deny", "both", "none"] = "deny"
    # OAuth installs (`/slack/install`): the app's credentials, from its Basic Information page.
    # Not bolt's SLACK_CLIENT_ID / SLACK_CLIENT_SECRET: with those set, bolt starts an OAuth flow
    # of its own, with installations in files under $HOME.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # The bot scopes an install asks for: the manifest's list.
    scopes: str = (
        "app_mentions:read,channels:history,groups:history,im:history,im:read,im:write,chat:write,"
        "reactions:write,commands,mpim:history,assistant:write,files:read,files:write"
    )
    state_ttl: int = Field(600, ge=30)  # seconds an install link (the `state` it carries) stays good
