"""Entry points besides mentions and DMs: the `/frontdesk` slash command and the "Send to agent" shortcut.

- `/frontdesk <agent> <text>` (or `/frontdesk <text>` for the agent routed to the
  channel) posts the request at the channel's root, which becomes the thread, and
  starts the agent there. Slack wants the command answered within 3 seconds and
  does not retry it, so the root post gets `ROOT_WITHIN` seconds and the thread is
  enqueued before the answer: an ephemeral line saying what happened, to the
  person only (https://docs.slack.dev/interactivity/implementing-slash-commands).
- The message shortcut `frontdesk_send` sends a message (someone else's too) to the
  agent routed to its channel, which answers in that message's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from channels.slack.api import Me, SlackApi
from channels.slack.inbound import Inbound, _dict, _noted, _str, said_at
from channels.slack.mrkdwn import escape
from gateway.errors import DeliveryFailed
from gateway.protocols import Inbox

log = structlog.get_logger("frontdesk.slack")
SEND_SHORTCUT = "frontdesk_send"
ROOT_WITHIN = 2.0  # seconds for the root post, so the answer still reaches Slack inside its 3
USAGE = "Usage: `/frontdesk <agent> <what you need>`, or `/frontdesk <what you need>` for this channel's agent."


def parse_command(text: str, agents: list[str]) -> tuple[str | None, str]:
    """(agent, request): the first word names an agent when it is one; else none is named."""
    first, _, rest = text.strip().partition(" ")
    if first.lower() in agents:
        return first.lower(), rest.strip()
    return None, text.strip()


class Commands:
    """The slash command's and the shortcut's listeners."""

    def __init__(self, api: SlackApi, inbox: Inbox, inbound: Inbound, me: Callable[[], Awaitable[Me]]) -> None:
        self.api = api
        self.inbox = inbox
        self.inbound = inbound
        self.me = me

    async def on_command(self, ack, body: dict[str, Any], context) -> None:
        """`/frontdesk [agent] text`: a root post, the thread under it, and an ephemeral answer."""
        user, channel = _str(body.get("user_id")), _str(body.get("channel_id"))
        agent, request = parse_command(_str(body.get("text")) or "", self.inbox.agents())
        if not (user and channel and request):
            await ack(response_type="ephemeral", text=USAGE)
            return
        me = await self.me()
        agent = agent or self.inbox.route(f"{me.team}/{channel}")
        if agent is None:
            names = ", ".join(self.inbox.agents())
            await ack(response_type="ephemeral", text=f"No agent answers in this channel; name one ({names}). {USAGE}")
            return
        try:
            async with asyncio.timeout(ROOT_WITHIN):
                root = await self.api.call(
                    "chat.postMessage",
                    posts=True,
                    channel=channel,
                    text=f"<@{user}> asked *{agent}*: {escape(request)}",
                )
        except (DeliveryFailed, TimeoutError) as exc:
            log.info("a slash command could not start a thread", channel=channel, error=str(exc) or "timed out")
            text = "I could not post in this channel. Invite me (`/invite @frontdesk`) or send me a DM, then try again."
            await ack(response_type="ephemeral", text=text)
            return
        ts = str(root.get("ts", ""))
        parsed = said_at(
            (user, channel, ts, ts),
            me,
            request,
            f"command:{channel}:{ts}",
            start=True,
            agent=agent,
        )
        accepted = await _noted(self.inbound.enqueue(parsed), context)
        if accepted is not None and accepted.limited:
            await ack(response_type="ephemeral", text=f"Too many requests; try again in {accepted.retry_after} s.")
            return
        await ack(response_type="ephemeral", text=f"Started *{agent}* in the thread.")

    async def on_shortcut(self, ack, body: dict[str, Any], context) -> None:
        """ "Send to agent" on a message: that message, to the channel's agent, answered in its thread."""
        user, channel = _str(_dict(body.get("user")).get("id")), _str(_dict(body.get("channel")).get("id"))
        posted = _dict(body.get("message"))
        ts, text, author = _str(posted.get("ts")), _str(posted.get("text")), _str(posted.get("user"))
        if user and channel and ts and text:
            me = await self.me()
            said = text if author in (None, user) else f"<@{author}> wrote: {text}"
            place = (user, channel, ts, _str(posted.get("thread_ts")) or ts)
            message_id = f"shortcut:{body.get('action_ts') or body.get('trigger_id')}:{user}:{ts}"
            await _noted(self.inbound.enqueue(said_at(place, me, said, message_id, start=True), ts), context)
        await ack()
