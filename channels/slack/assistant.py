"""Assistant threads: Slack's AI-app pane, where each thread is its own conversation.

Slack sends `assistant_thread_started` when a person opens the pane (or a new chat in
it) and `assistant_thread_context_changed` when they move to another channel with the
pane open; both carry `assistant_thread` = {user_id, channel_id (the DM), thread_ts,
context: {channel_id, team_id, enterprise_id}} (docs.slack.dev/ai/developing-ai-apps).

- The thread is remembered (its context, in the channel's own keys), so the person's
  messages in it go to a conversation of their own, `team/D…/thread_ts`, which may start
  a thread — unlike a plain DM's threads, which only continue one the agent opened.
- `assistant.threads.setSuggestedPrompts` offers the routed agent's `suggested_prompts`
  from frontdesk.toml (at most 4); with none, nothing is called.
- The first message names the thread (`assistant.threads.setTitle`, or with agent
  sessions `agents.sessions.rename`), once: a Redis SET NX decides which replica does it.

All of it runs off the request path, after the event is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from channels.slack.api import Me, SlackApi
from channels.slack.settings import SlackAgentSettings
from gateway.errors import DeliveryFailed, Unavailable
from gateway.messages import InboundMessage
from gateway.protocols import ChannelState, Inbox

log = structlog.get_logger("frontdesk.slack")
EVENTS = frozenset({"assistant_thread_started", "assistant_thread_context_changed"})
TITLE_LENGTH = 60
# How long an assistant thread is remembered without news; as long as a thread may wait for a person.
REMEMBER = 30 * 24 * 3600

Spawn = Callable[[Coroutine[Any, Any, None]], None]


def thread_key(channel: str, thread_ts: str) -> str:
    return f"assistant:{channel}:{thread_ts}"


def title_key(channel: str, thread_ts: str) -> str:
    """The thread's title, set once: whoever sets it names the thread (and an agent session reads it)."""
    return f"titled:{channel}:{thread_ts}"


class Assistant:
    """Assistant-thread events, and which messages belong to an assistant thread."""

    def __init__(
        self, api: SlackApi, inbox: Inbox, state: ChannelState, settings: SlackAgentSettings, spawn: Spawn
    ) -> None:
        self.api = api
        self.inbox = inbox
        self.state = state
        self.settings = settings
        self.spawn = spawn

    async def on_event(self, body: dict[str, Any], me: Me) -> None:
        """An assistant_thread_* event: remember the thread (before the 200), then offer prompts."""
        event = _dict(body.get("event"))
        thread = _dict(event.get("assistant_thread"))
        channel, ts = thread.get("channel_id"), thread.get("thread_ts")
        if not (isinstance(channel, str) and channel and isinstance(ts, str) and ts):
            return
        context = _dict(thread.get("context"))
        await self.state.set(thread_key(channel, ts), json.dumps(context), ttl=REMEMBER)
        if event.get("type") == "assistant_thread_started":
            self.spawn(self._suggest(me, channel, ts))

    async def place(self, message: InboundMessage) -> InboundMessage | None:
        """`message` moved to its assistant thread's own conversation, or None if it is in none."""
        reply = message.reply_to
        channel, ts = reply.get("channel"), reply.get("thread_ts")
        if not (channel and str(channel).startswith("D") and ts):
            return None
        stored = await self.state.get(thread_key(channel, ts))
        if stored is None:
            return None
        context = _context(stored)
        update: dict[str, Any] = {
            "conversation": f"{reply['team']}/{channel}/{ts}",
            "reply_to": {**reply, "assistant": True},
        }
        if context.get("channel_id"):
            # Where the person was looking when they asked: the agent sees it as the message's data.
            update["data"] = {**(message.data or {}), "slack_context": context}
        return message.model_copy(update=update)

    def titled(self, message: InboundMessage) -> None:
        """Name the assistant thread after its first message (once per thread, across replicas)."""
        reply = message.reply_to
        if reply.get("assistant") and message.text:
            self.spawn(self._title(reply["channel"], reply["thread_ts"], message.text))

    async def _suggest(self, me: Me, channel: str, ts: str) -> None:
        agent = self.inbox.route(f"{me.team}/{channel}")
        prompts = self.inbox.suggested_prompts(agent) if agent else []
        if not prompts:
            return
        try:
            await self.api.call(
                "assistant.threads.setSuggestedPrompts",
                channel_id=channel,
                thread_ts=ts,
                prompts=[{"title": p[:75], "message": p} for p in prompts[:4]],
            )
        except DeliveryFailed as exc:  # the pane works without them
            log.info("suggested prompts not set", channel=channel, thread_ts=ts, error=str(exc))

    async def _title(self, channel: str, ts: str, text: str) -> None:
        title = " ".join(text.split())
        title = title if len(title) <= TITLE_LENGTH else title[: TITLE_LENGTH - 1].rstrip() + "…"
        try:
            if not await self.state.set(title_key(channel, ts), title, ttl=REMEMBER, only_new=True):
                return
            if self.settings.agent_sessions:
                # The session may not exist yet (the worker's first setStatus creates it, reading
                # the title stored above); renaming covers a session that does.
                await self.api.call("agents.sessions.rename", channel_id=channel, thread_ts=ts, title=title)
            else:
                await self.api.call("assistant.threads.setTitle", channel_id=channel, thread_ts=ts, title=title)
        except (DeliveryFailed, Unavailable) as exc:
            log.info("assistant thread title not set", channel=channel, thread_ts=ts, error=str(exc))


def _context(stored: str) -> dict[str, Any]:
    try:
        return _dict(json.loads(stored))
    except ValueError:
        return {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
