"""Outbound: an OutboundMessage as Slack messages, always in its thread.

- A message for a Slack conversation is posted with `thread_ts`. Without a valid
  one the send fails and is recorded; it never falls back to the channel's root.
- Only a conversation the agent opens (a contact with no reply_to yet) starts at
  a root: a user id opens a DM (conversations.open), a channel id is posted to
  directly. That post's ts becomes the thread, returned in Sent.conversation.
- A contact whose reply_to names a Slack thread with `adopt` (a HumanLayer call's
  `thread_ts`) is posted in it, and that Slack thread's answers come to ours.
- A question's choices are buttons (`interactive`); approvals carry Approve / Deny buttons,
  with a copy to every Slack approver (`approvals`); their receipt updates that message
  (chat.update) to say who decided and when.
- Notices go to the one person they answer, as an ephemeral message in place.
- Every post names its outbound id in metadata; a post whose answer is lost is
  looked up before it is tried again (`lookup`), so it is neither lost nor doubled.
- A text mrkdwn would flatten (headings, nested lists) or cut in parts goes as
  one `markdown` block (`mrkdwn.markdown_block`), up to its 12,000 characters,
  with the first mrkdwn part as the `text` notifications show.
- Longer texts go out in mrkdwn parts (`mrkdwn.split`); the parts Slack accepted
  are remembered, so a retry after a 429 on part 3 posts parts 3 onwards only.
"""

from __future__ import annotations

import json
import re
from typing import Any

import structlog

from channels.slack.api import SlackApi
from channels.slack.approvals import Approvals
from channels.slack.files import Files
from channels.slack.interactive import choice_blocks
from channels.slack.lookup import posted, tag
from channels.slack.mrkdwn import markdown_block, mentions, split, to_mrkdwn
from channels.slack.stream import Streamer
from gateway.errors import DeliveryFailed, Unavailable
from gateway.markdown import literal
from gateway.messages import OutAction, OutboundMessage, Sent
from gateway.protocols import ChannelState, Inbox

log = structlog.get_logger("frontdesk.slack")
APPROVAL_BLOCK = "frontdesk_approval"
APPROVE, DENY = "frontdesk_approve", "frontdesk_deny"
_TS = re.compile(r"^\d+\.\d+$")


class Outbound:
    """Delivers outbound messages through the Web API."""

    def __init__(
        self, api: SlackApi, inbox: Inbox, state: ChannelState, parts_ttl: int, approvals: Approvals | None = None
    ) -> None:
        self.api = api
        self.approvals = approvals
        self.inbox = inbox
        self.state = state
        self.parts_ttl = parts_ttl  # FRONTDESK_DEDUPE_TTL: as long as a retry of the message may come
        # Set by the channel when turned on: long answers as files, answers as streams.
        self.files: Files | None = None
        self.stream: Streamer | None = None

    async def send(self, message: OutboundMessage) -> Sent:
        if message.kind == "notice":
            return await self._notice(message)
        if message.kind == "receipt" and message.updates:
            return await self._update(message)
        return await self._post(message)

    # ------------------------------------------------------------ posts
    async def _post(self, message: OutboundMessage) -> Sent:
        place = _in_thread(message)  # files and streams go only into a thread that exists
        if place and self.files is not None and self.files.wants(message, place[1]):
            return await self.files.upload(message, *place)
        if place and self.stream is not None and self.stream.wants(message, place[1]):
            return await self.stream.send(message, *place)
        markdown = _with_choices(message.text, message.choices)
        parts = split(to_mrkdwn(markdown))
        if not parts:
            raise DeliveryFailed("nothing to post: the message is empty")
        channel, thread_ts = await self._where(message)
        opened = thread_ts is None
        block = None if message.actions or message.choices else markdown_block(markdown, parts=len(parts))
        if block:
            ts = await self.post_once(message, 0, channel=channel, text=parts[0], thread_ts=thread_ts, blocks=[block])
            await self._asked(message, channel, ts, parts[0])
            return Sent(detail=ts) if not opened else await self._opened(message, channel, ts, ts)
        done = await self._parts_done(message) if len(parts) > 1 else {}
        ts = ""
        for index, text in enumerate(parts):
            ts = done.get(index, "")
            if not ts:
                last = index == len(parts) - 1
                blocks = _blocks(message, text) if last else None
                ts = await self.post_once(
                    message, index, channel=channel, text=text, thread_ts=thread_ts, blocks=blocks
                )
                if len(parts) > 1:
                    await self._part_done(message, index, ts)
            # The first part of a new conversation is its root; the rest reply under it.
            thread_ts = thread_ts or ts
        await self._asked(message, channel, ts, parts[-1])
        if not opened:
            if (message.reply_to or {}).get("adopt"):
                # Posted in a Slack thread the frontdesk thread did not start (a HumanLayer call's
                # thread_ts): answers there, typed or clicked, must find this thread.
                team = (await self.api.me()).team
                where = {"team": team, "channel": channel, "thread_ts": thread_ts}
                return Sent(detail=ts, conversation=f"{team}/{channel}/{thread_ts}", reply_to=where)
            return Sent(detail=ts)
        return await self._opened(message, channel, thread_ts or ts, ts)

    async def _asked(self, message: OutboundMessage, channel: str, ts: str, text: str) -> None:
        """A request is out at `ts`: an approval's copies to every approver; both noted for the Home tab."""
        if self.approvals is None:
            return
        if message.kind == "approval":
            await self.approvals.asked(message, channel, ts, text, _blocks(message, text), self.post_once)
        elif message.kind == "question":
            question = {"kind": "question", "thread": message.thread_id, "text": text, "channel": channel, "ts": ts}
            await self.approvals.remember(question, [message.address])

    async def recover(self, message: OutboundMessage) -> Sent | None:
        """What Slack has of a send a stopped sender left unrecorded: its parts are looked up by metadata.

        Found parts are remembered as posted, so sending it again posts only the rest.
        """
        if message.kind == "receipt" and message.updates:
            return None  # chat.update: doing it again changes nothing
        if message.kind == "notice":
            raise DeliveryFailed("an ephemeral notice cannot be read back")
        place = _in_thread(message)
        for way in (self.files, self.stream):
            if place and way is not None and way.wants(message, place[1]):
                raise DeliveryFailed("a file or a stream is not read back by its metadata")
        markdown = _with_choices(message.text, message.choices)
        parts = split(to_mrkdwn(markdown))
        if not (message.actions or message.choices) and markdown_block(markdown, parts=len(parts)):
            parts = parts[:1]  # one post: the markdown block (see _post)
        channel, thread_ts = await self._where(message)
        root, ts = thread_ts, ""
        for index in range(len(parts)):
            ts = await posted(self.api, channel, root, tag(message.id, index)) or ""
            if not ts:
                return None
            if len(parts) > 1:
                await self._part_done(message, index, ts)
            root = root or ts
        log.info("an interrupted send is in Slack", outbound_id=message.id, parts=len(parts))
        if thread_ts is not None:
            return Sent(detail=ts)
        return await self._opened(message, channel, root or ts, ts)

    async def post_once(self, message: OutboundMessage, part: int | str, **args: Any) -> str:
        """Post one part, tagged with its outbound id; after a lost answer, ask Slack (`lookup`) before again."""
        metadata = tag(message.id, part)
        try:
            data = await self.api.call("chat.postMessage", posts=True, metadata=metadata, **args)
        except DeliveryFailed as lost:
            if not lost.ambiguous:
                raise
            try:
                ts = await posted(self.api, args["channel"], args.get("thread_ts"), metadata)
            except DeliveryFailed as exc:
                log.warning("cannot tell whether a post reached Slack", outbound_id=message.id, error=str(exc))
                raise lost from exc
            if ts is not None:
                log.info("a post whose answer was lost is in Slack", outbound_id=message.id, part=part, ts=ts)
                return ts
            log.info("a post whose answer was lost is not in Slack; posting it again", outbound_id=message.id)
            data = await self.api.call("chat.postMessage", posts=True, metadata=metadata, **args)
        return str(data.get("ts", ""))

    async def _where(self, message: OutboundMessage) -> tuple[str, str | None]:
        """(channel, thread_ts) to post to; thread_ts None only for a conversation we open."""
        reply = message.reply_to or {}
        channel = reply.get("channel")
        if channel:
            thread_ts = str(reply.get("thread_ts") or "")
            if not _TS.match(thread_ts):
                raise DeliveryFailed(
                    f"no valid thread_ts for {channel} (got {thread_ts!r}); not posting at the channel root"
                )
            return channel, thread_ts
        address = message.address.rsplit("/", 1)[-1]  # a route may name team/channel
        if address[:1] in ("U", "W"):
            data = await self.api.call("conversations.open", users=address)
            return data["channel"]["id"], None
        if address[:1] in ("C", "G", "D"):
            return address, None
        raise DeliveryFailed(f"{message.address!r} is neither a Slack user id nor a channel id")

    async def _opened(self, message: OutboundMessage, channel: str, root: str, last: str) -> Sent:
        """The conversation a root post opened, so the outbox binds replies to the thread."""
        team = (await self.api.me()).team
        if channel.startswith("D"):
            # A reply at the DM's root (not in the Slack thread) should find the thread too:
            # the DM as a whole now points at the thread that wrote last.
            try:
                await self.inbox.bind(f"{team}/{channel}", message.thread_id)
            except Unavailable as exc:  # the post is out: failing the send now would post it twice
                log.warning("could not bind the DM to the thread", channel=channel, error=str(exc))
        return Sent(
            detail=last,
            conversation=f"{team}/{channel}/{root}",
            reply_to={"team": team, "channel": channel, "thread_ts": root},
        )

    # ------------------------------------------------------------ receipts, notices
    async def _update(self, message: OutboundMessage) -> Sent:
        """Rewrite the approval message to say who decided and when; its buttons go."""
        assert message.updates is not None  # send() routes only such receipts here
        channel = (message.reply_to or {}).get("channel")
        if not channel:
            raise DeliveryFailed("no channel for the approval message to update")
        text = mentions(to_mrkdwn(message.text))
        if message.choices:  # a pick among a question's choices
            icon = ":ballot_box_with_check:"
        else:
            icon = ":white_check_mark:" if message.text.startswith("Approved") else ":no_entry_sign:"
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {text}"[:3000]}}]
        await self.api.call("chat.update", channel=channel, ts=message.updates, text=text, blocks=blocks)
        if self.approvals is not None and not message.choices:
            await self.approvals.decided(message.updates, text, blocks)  # and every approver's copy
        return Sent(detail=message.updates)

    async def _notice(self, message: OutboundMessage) -> Sent:
        """Only the person it answers sees it: ephemeral in place, else a DM."""
        reply = message.reply_to or {}
        text = to_mrkdwn(message.text)
        if reply.get("channel"):
            try:
                data = await self.api.call(
                    "chat.postEphemeral",
                    posts=True,
                    channel=reply["channel"],
                    user=message.address,
                    text=text,
                    thread_ts=reply.get("thread_ts"),
                )
                return Sent(detail=data.get("message_ts"))
            except DeliveryFailed as exc:
                if exc.retryable or exc.ambiguous:
                    raise
                log.info("ephemeral notice refused; sending it as a DM", error=str(exc))
        dm = await self.api.call("conversations.open", users=message.address)
        data = await self.api.call("chat.postMessage", posts=True, channel=dm["channel"]["id"], text=text)
        return Sent(detail=data.get("ts"))

    # ------------------------------------------------------------ parts of a long message
    def _parts_key(self, message: OutboundMessage) -> str:
        return f"parts:{message.id}"

    async def _parts_done(self, message: OutboundMessage) -> dict[int, str]:
        stored = await self.state.fields(self._parts_key(message))
        return {int(index): ts for index, ts in stored.items()}

    async def _part_done(self, message: OutboundMessage, index: int, ts: str) -> None:
        try:
            await self.state.set_field(self._parts_key(message), str(index), ts, ttl=self.parts_ttl)
        except Unavailable as exc:  # as above: the part is out; carry on with the next
            log.warning("could not record a posted part", outbound_id=message.id, part=index, error=str(exc))


def approval_blocks(text: str, actions: list[OutAction]) -> list[dict[str, Any]]:
    """The request as a section, then one button per action; the value names the call."""
    buttons = [
        {
            "type": "button",
            "action_id": APPROVE if action.approved else DENY,
            "text": {"type": "plain_text", "text": action.label[:75]},
            "style": "primary" if action.approved else "danger",
            "value": json.dumps({"call_id": action.call_id, "approved": action.approved}),
        }
        for action in actions
    ]
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": APPROVAL_BLOCK, "elements": buttons},
    ]


def _blocks(message: OutboundMessage, text: str) -> list[dict[str, Any]] | None:
    """Buttons under the last part: Approve / Deny, or one per choice of a question."""
    if message.actions:
        return approval_blocks(text, message.actions)
    if message.choices and message.kind == "question":
        return choice_blocks(text, message.choices)
    return None


def _in_thread(message: OutboundMessage) -> tuple[str, str] | None:
    reply = message.reply_to or {}
    thread_ts = str(reply.get("thread_ts") or "")
    return (str(reply["channel"]), thread_ts) if reply.get("channel") and _TS.match(thread_ts) else None


def _with_choices(text: str, choices: list[str]) -> str:
    if not choices:
        return text
    return f"{text}\n\nReply with one of: " + " / ".join(f"**{literal(choice)}**" for choice in choices)
