"""Inbound: Slack events and button clicks as InboundMessages, enqueued and nothing more.

Conversations (the key a thread is found by):

- a mention in a channel: `team/channel/thread_ts` (its own ts at the top level);
  it starts a thread or continues the one there;
- a reply in a channel thread without a mention: the same key, but it only counts
  while the thread there waits for a person (or is running) — chatter in channels
  and in finished threads never wakes an agent;
- a DM: the DM as a whole, `team/D…`, like an SMS conversation. A reply inside a
  Slack thread of the DM goes to that Slack thread's conversation when one is bound
  (`team/D…/ts`, a DM the agent opened), else to the DM's. So a person answers an
  agent's DM either in its thread or at the DM's root.
- a click on Approve / Deny: the conversation of the message it sits on; it never
  starts a thread.

A person is known by their user id when they belong to the installing team
(`Me.team` for a message; for a click or a modal, the `team` the interaction came
through), and as `team/user` when their own team is another (a Slack Connect channel, another workspace of an org): such an
identity matches no approver or responder configured as `slack:U…`, so a click by a
user of another team never decides an approval.

Never enqueued: messages from bots (ours included), edits, deletions and other
subtypes (file shares and replies also sent to the channel excepted), and root
messages in channels. Slack sends a mention twice — as `app_mention` and as a
`message` — so the `message` copy of a mention is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from channels.slack.api import Me
from channels.slack.assistant import EVENTS as ASSISTANT_EVENTS
from channels.slack.assistant import Assistant
from gateway.errors import Malformed, Unavailable, answer
from gateway.messages import Accepted, ApprovalChoice, Attachment, InboundMessage
from gateway.protocols import Inbox

log = structlog.get_logger("frontdesk.slack")
# Set in bolt's context by the HTTP route: a Redis failure is put here so the route
# answers 503 with Retry-After (bolt itself would say 500).
OUTCOME = "frontdesk_outcome"
# Subtypes that are a person writing: a file with a comment, a thread reply also sent to the channel.
PERSON_SUBTYPES = {"file_share", "thread_broadcast"}
LIVE = {"waiting_human", "waiting_approval", "running"}
T = TypeVar("T")


@dataclass(frozen=True)
class Parsed:
    """An event worth enqueueing, and how to place it."""

    message: InboundMessage
    start: bool  # may start a thread (a mention, a DM); else only an existing one
    prefer: str | None = None  # a more specific conversation, used when it has a thread
    live_only: bool = False  # a plain channel reply: only while its thread is live
    react: bool = True  # put the acknowledgement reaction on it
    agent: str | None = None  # named by the sender (a slash command); else routed by the address


def event_callback(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    """An Events API callback's payload; None for anything else Slack posts (forms, url_verification)."""
    if not (body[:1] == b"{" or content_type == "application/json"):  # bolt's test for a JSON body
        return None
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise Malformed(f"unreadable Slack request: {exc}") from None
    return payload if isinstance(payload, dict) and payload.get("type") == "event_callback" else None


def from_event(body: dict[str, Any], me: Me) -> Parsed | None:
    """An Events API callback as a message to enqueue, or None if it must be ignored."""
    event = _dict(body.get("event"))
    kind, user = event.get("type"), _str(event.get("user"))
    if kind not in ("app_mention", "message") or not user:
        return None
    if event.get("bot_id") or user == me.user_id:
        return None
    if event.get("subtype") and _str(event["subtype"]) not in PERSON_SUBTYPES:
        return None
    channel, ts = _str(event.get("channel")), _str(event.get("ts"))
    if not channel or not ts:
        return None
    thread_ts = _str(event.get("thread_ts"))
    text = _str(event.get("text")) or ""
    dm = event.get("channel_type") == "im" or channel.startswith("D")
    if kind == "message" and not dm:
        if not thread_ts or thread_ts == ts:
            return None  # a channel's root: nothing here is addressed to us
        if re.search(rf"<@{re.escape(me.user_id)}(\|[^>]*)?>", text):
            return None  # the app_mention copy of this message is the one we take
    root = thread_ts or ts
    message = InboundMessage(
        id=_str(body.get("event_id")) or f"{channel}/{ts}",
        channel="slack",
        conversation=f"{me.team}/{channel}" if dm else f"{me.team}/{channel}/{root}",
        sender=_person(user, _str(event.get("user_team")) or _str(event.get("team")), me),
        text=_strip_mention(text, me.user_id),
        address=f"{me.team}/{channel}",
        attachments=_files(event.get("files")),
        received_at=_time(ts),
        reply_to={"team": me.team, "channel": channel, "thread_ts": root},
        group=None if dm else channel,
    )
    if dm:
        return Parsed(message, start=True, prefer=f"{me.team}/{channel}/{thread_ts}" if thread_ts else None)
    return Parsed(message, start=kind == "app_mention", live_only=kind == "message")


def from_click(body: dict[str, Any], me: Me) -> Parsed | None:
    """A click on an approval button as a decision, or on a choice button as the answer, on the message's conversation."""
    try:
        value = json.loads(clicked_action(body).get("value") or "")
    except (ValueError, TypeError):
        return None
    if isinstance(value, dict) and isinstance(value.get("choice"), str) and value["choice"]:
        answer = value["choice"]
        # `data` too: the core then rewrites the question to show the pick (a receipt).
        return on_clicked_message(body, me, answer, choice=answer, data={"choice": answer})
    choice = approval_choice(value)
    if choice is None:
        return None
    return on_clicked_message(body, me, "approve" if choice.approved else "deny", decision=choice)


def approval_choice(value: Any) -> ApprovalChoice | None:
    """The decision a button's value (JSON with call_id and approved, or its text) carries; None if none."""
    try:
        data = json.loads(value or "") if isinstance(value, str) else value
        return ApprovalChoice(call_id=str(data["call_id"]), approved=bool(data["approved"]))
    except (ValueError, KeyError, TypeError):
        return None


def clicked_action(body: dict[str, Any]) -> dict[str, Any]:
    """The first action of a block_actions payload ({} if none)."""
    actions = body.get("actions")
    return _dict(actions[0] if isinstance(actions, list) and actions else None)


# Where a click happened: (who clicked, channel, the clicked message's ts, its thread's root ts).
Place = tuple[str, str, str, str]


def clicked_place(body: dict[str, Any]) -> Place | None:
    """Who clicked a button of a message we posted, and where that message is; None if the payload lacks it."""
    user = clicker(body)
    container, posted = _dict(body.get("container")), _dict(body.get("message"))
    channel = _str(container.get("channel_id")) or _str(_dict(body.get("channel")).get("id"))
    message_ts = _str(container.get("message_ts")) or _str(posted.get("ts"))
    if not (user and channel and message_ts):
        return None
    return user, channel, message_ts, _str(container.get("thread_ts")) or _str(posted.get("thread_ts")) or message_ts


def on_clicked_message(body: dict[str, Any], me: Me, text: str, **fields: Any) -> Parsed | None:
    """A click on a button of a message we posted, as `text` said in that message's conversation."""
    place = clicked_place(body)
    if place is None:
        return None
    # A click has no event id; the same click retried carries the same action_ts.
    return said_at(place, me, text, f"{clicked_action(body).get('action_ts')}:{place[0]}:{place[2]}", **fields)


def said_at(
    place: Place, me: Me, text: str, message_id: str, *, start: bool = False, agent: str | None = None, **fields: Any
) -> Parsed:
    """`text` from the person at `place`, on the conversation of the message there (by default only an existing one)."""
    user, channel, _, root = place
    dm = channel.startswith("D")
    message = InboundMessage(
        id=message_id,
        channel="slack",
        conversation=f"{me.team}/{channel}" if dm else f"{me.team}/{channel}/{root}",
        sender=user,
        text=text,
        address=f"{me.team}/{channel}",
        reply_to={"team": me.team, "channel": channel, "thread_ts": root},
        # An approval or a question asked of the channel may be answered by anyone in it.
        group=None if dm else channel,
        **fields,
    )
    return Parsed(message, start=start, prefer=f"{me.team}/{channel}/{root}" if dm else None, react=start, agent=agent)


def _person(user: str, team: str | None, me: Me) -> str:
    """`user` for a member of the installing team (or when Slack names no team), else `team/user`."""
    return user if not team or team == me.team else f"{team}/{user}"


def clicker(body: dict[str, Any]) -> str | None:
    """Who clicked or submitted (an interaction payload): the user id, as `team/user` when their own
    team (`user.team_id`) is not the team the interaction came through (`team.id`, the installing one)."""
    person = _dict(body.get("user"))
    user, home, via = _str(person.get("id")), _str(person.get("team_id")), _str(_dict(body.get("team")).get("id"))
    if user is None:
        return None
    return f"{home}/{user}" if home and via and home != via else user


class Inbound:
    """Parse, place, enqueue: for the HTTP route (`event`) and as bolt's listeners, which then acknowledge."""

    def __init__(
        self,
        inbox: Inbox,
        me: Callable[[], Awaitable[Me]],
        react: Callable[[str, str], None],
        assistant: Assistant | None = None,
    ) -> None:
        self.inbox = inbox
        self.me = me
        self.react = react
        self.assistant = assistant

    async def event(self, body: dict[str, Any]) -> None:
        """An Events API callback, enqueued unless it is to be ignored."""
        me = await self.me()
        if self.assistant is not None and _dict(body.get("event")).get("type") in ASSISTANT_EVENTS:
            await self.assistant.on_event(body, me)
            return
        parsed = from_event(body, me)
        if parsed is not None and self.assistant is not None and parsed.prefer:
            # A DM's Slack thread: an assistant thread is a conversation of its own, which may start one.
            placed = await self.assistant.place(parsed.message)
            if placed is not None:
                parsed = Parsed(placed, start=True)
        if parsed is not None:
            await self.enqueue(parsed, ts=_dict(body.get("event")).get("ts"))

    async def on_event(self, ack, body: dict[str, Any], context) -> None:
        """Bolt's listener for events (Socket Mode; over HTTP the route calls `event`)."""
        await _noted(self.event(body), context)
        await ack()

    async def on_click(self, ack, body: dict[str, Any], context) -> None:
        await self.clicked(from_click, ack, body, context)

    async def clicked(self, parse: Callable[[dict[str, Any], Me], Parsed | None], ack, body: dict[str, Any], context):
        """A button's listener: `parse` the click, enqueue it, then acknowledge."""
        # Slack does not retry a click: enqueue before the ack, so a failure shows the person an error.
        parsed = parse(body, await self.me())
        if parsed is not None:
            await _noted(self.enqueue(parsed), context)
        await ack()

    async def enqueue(self, parsed: Parsed, ts: str | None = None) -> Accepted | None:
        """Place `parsed` and hand it to the inbox (the route's answer follows from what the inbox did).

        None: not enqueued (nowhere to place it, or no agent answers its address).
        """
        message = parsed.message
        conversation = await self._place(parsed)
        if conversation is None:
            return None
        agent = parsed.agent or self.inbox.route(message.address)
        if agent is None and parsed.start:
            log.info("no agent answers this Slack address", address=message.address)
            return None
        message = message.model_copy(update={"conversation": conversation})
        accepted = await self.inbox.accept(message, agent=agent or "", only_existing=not parsed.start)
        # Over the rate: dropped (and counted) with a 200, since Slack retries any error.
        answer("slack", accepted, message)
        if parsed.react and ts and accepted.outcome == "new":
            self.react(message.reply_to["channel"], ts)
        if self.assistant is not None and accepted.outcome == "new":
            self.assistant.titled(message)
        return accepted

    async def _place(self, parsed: Parsed) -> str | None:
        """The conversation to enqueue on; None when the message must not be enqueued."""
        inbox = self.inbox
        if parsed.prefer and await inbox.thread_for(parsed.prefer):
            return parsed.prefer
        conversation = parsed.message.conversation
        if parsed.live_only:
            thread_id = await inbox.thread_for(conversation)
            if thread_id is None:
                return None
            status = await inbox.thread_status(thread_id)
            if status is not None and status not in LIVE:  # None: the thread is not written yet
                return None
        return conversation


async def _noted(work: Awaitable[T], context) -> T:
    """Run a listener's work; a Redis failure is noted in bolt's context for the HTTP route's 503."""
    try:
        return await work
    except Unavailable as exc:
        outcome = context.get(OUTCOME)
        if outcome is not None:
            outcome["error"] = exc
        raise


# Payloads are signed by Slack, yet read defensively: a field of another type counts as
# absent, so an odd payload is ignored rather than failing the request.
def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strip_mention(text: str, user_id: str) -> str:
    return re.sub(rf"<@{re.escape(user_id)}(\|[^>]*)?>", "", text).strip()


def _time(ts: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC)
    except (ValueError, OverflowError, OSError):  # not a number, or a year datetime cannot hold
        return datetime.now(UTC)


def _files(files: Any) -> list[Attachment]:
    """File metadata; the bytes stay at Slack (url_private needs the bot token to fetch)."""
    return [
        Attachment(
            filename=_str(f.get("name")),
            content_type=_str(f.get("mimetype")) or "application/octet-stream",
            size=f["size"] if type(f.get("size")) is int else None,
            ref=_str(f.get("url_private")) or _str(f.get("permalink")) or f"slack-file:{f.get('id')}",
        )
        for f in (files if isinstance(files, list) else [])
        if isinstance(f, dict) and f.get("id")
    ]
