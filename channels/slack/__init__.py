"""Slack: mentions, DMs and thread replies in; threaded replies, approvals and receipts out.

In: `POST /slack/events` (Events API and interactivity, one Request URL): the
signature and timestamp checked (slack_sdk's SignatureVerifier), then an event
callback enqueued by `inbound` directly, and anything else through slack-bolt's
AsyncApp — `url_verification` answered, button clicks to listeners that only
enqueue (`inbound` again). Slack's retries and repeated
event ids are dropped by the ingest dedupe keys (FRONTDESK_DEDUPE_TTL, a week;
Slack retries for about an hour). With SLACK_APP_TOKEN, `serve` also takes events
over Socket Mode, for development without a public URL.

Out: slack_sdk's async client at FRONTDESK_SLACK_API_URL, without SDK retries,
errors mapped to DeliveryFailed (`api`); Markdown as mrkdwn, cut to size, or as
one `markdown` block where mrkdwn would flatten it (`mrkdwn`, over gateway.markdown's
parse); always in the thread (`outbound`). A received message gets the
FRONTDESK_SLACK_ACK_REACTION emoji ("eyes"; empty for none).

As an AI app: assistant threads (`assistant`), the thread status while a step runs
(`status`, fed by the worker through `progress`), streamed answers (`stream`), and
files both ways (`files`). Around people: choices as buttons (`interactive`),
approvals with a reason, a copy to every approver and the Home tab (`approvals`), the
slash command and the shortcut (`commands`), posts looked up after a lost answer
(`lookup`), and OAuth installs for any workspace (`oauth`). Their settings are
`settings.SlackAgentSettings`.

Enabled when SLACK_BOT_TOKEN (one workspace) or FRONTDESK_SLACK_CLIENT_ID and
FRONTDESK_SLACK_CLIENT_SECRET (OAuth installs, any workspace: `oauth`) are set, with
SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN (Socket Mode). The app manifest is deploy/slack/manifest.yaml.
"""

from __future__ import annotations

from channels.slack.channel import SlackChannel
from channels.slack.settings import SlackAgentSettings
from gateway.protocols import ChannelContext, Unconfigured
from gateway.settings import plugin_settings

__all__ = ["SlackChannel", "channel"]


def channel(context: ChannelContext) -> SlackChannel | Unconfigured:
    """The Slack channel, or what is missing when its tokens are not set."""
    settings = context.settings
    options = plugin_settings(SlackAgentSettings, settings)
    if settings.slack_bot_token is None and not (options.client_id and options.client_secret):
        return Unconfigured("slack", "SLACK_BOT_TOKEN is not set")
    if settings.slack_signing_secret is None and settings.slack_app_token is None:
        return Unconfigured("slack", "neither SLACK_SIGNING_SECRET (HTTP) nor SLACK_APP_TOKEN (Socket Mode) is set")
    return SlackChannel(context)
