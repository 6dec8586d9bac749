"""Approvals 2.0: a reason asked in a modal, every approver asked, every copy settled, the App Home list.

- **A reason.** Deny (and Approve too with FRONTDESK_SLACK_ASK_REASON=both) opens a
  modal: `views.open` with the click's `trigger_id`, which Slack honours for 3 seconds
  only, so the listener opens it before it acknowledges and enqueues nothing. The
  modal's `view_submission` is the decision, its text the comment
  (ApprovalChoice.comment). If the modal cannot open, the click decides without one.
- **Every approver.** Besides the request in place, each Slack approver the core names
  (`OutboundMessage.approvers`) gets a copy by DM, bound to the thread, so a click on
  any copy decides. When one decides, the receipt rewrites every copy.
- **App Home.** `app_home_opened` publishes (`views.publish`) the approvals and the
  questions still waiting on the person who opened it.

Keys (ChannelState): `approval:<ts>` what was asked (an approval or a question) and
where its copies are, an approval's deleted once decided; `latest:<thread>` the
thread's latest request; `waiting:<user>` what a person was asked (ts -> "1"), read
through the records and the thread's status, so what was answered simply drops out.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from channels.slack.api import Me, SlackApi
from channels.slack.inbound import (
    Inbound,
    Parsed,
    _dict,
    _str,
    approval_choice,
    clicked_action,
    clicked_place,
    clicker,
    from_click,
    said_at,
)
from gateway.errors import DeliveryFailed, Unavailable
from gateway.messages import ApprovalChoice, OutboundMessage
from gateway.protocols import ChannelState, Inbox

log = structlog.get_logger("frontdesk.slack")
DECISION_VIEW = "frontdesk_decision"
REASON = "reason"  # the modal's input block and its element
HOME_MOST = 40  # approvals shown on the Home tab (two blocks each; a view holds 100)

# Posts one tagged message: (message, part, **chat.postMessage arguments) -> ts.
PostOnce = Callable[..., Awaitable[str]]


class Approvals:
    """The modal, the copies and the Home tab, around the channel's approval messages."""

    def __init__(self, api: SlackApi, inbox: Inbox, state: ChannelState, inbound: Inbound, ask: str, ttl: int):
        self.api = api
        self.inbox = inbox
        self.state = state
        self.inbound = inbound
        self.ask = ask  # FRONTDESK_SLACK_ASK_REASON: deny, both or none
        self.ttl = ttl

    # ------------------------------------------------------------ a reason, in a modal
    def asks_reason(self, approved: bool) -> bool:
        return self.ask == "both" or (self.ask == "deny" and not approved)

    async def on_click(self, ack, body: dict[str, Any], context) -> None:
        """Approve / Deny: the modal asking why where configured, else the decision at once."""
        choice = approval_choice(clicked_action(body).get("value"))
        place, trigger = clicked_place(body), _str(body.get("trigger_id"))
        if choice is not None and place is not None and trigger and self.asks_reason(choice.approved):
            request = _str(_dict(body.get("message")).get("text")) or "this request"
            try:
                await self.api.call("views.open", trigger_id=trigger, view=decision_view(choice, place, request))
                await ack()
                return
            except DeliveryFailed as exc:  # an expired trigger, a rate limit: decide without a reason
                log.warning("the reason modal did not open; deciding without one", error=str(exc))
        await self.inbound.clicked(from_click, ack, body, context)

    async def on_submit(self, ack, body: dict[str, Any], context) -> None:
        """The modal's submission: the decision with its comment (a denial needs one; an approval may have one)."""
        parsed = from_submission(body, await self.inbound.me())
        decision = parsed.message.decision if parsed else None
        if decision is not None and not decision.comment and not decision.approved:
            await ack(response_action="errors", errors={REASON: "Please say why."})
            return
        await self.inbound.clicked(from_submission, ack, body, context)

    # ------------------------------------------------------------ every approver
    async def asked(
        self, message: OutboundMessage, channel: str, ts: str, text: str, blocks: Any, post: PostOnce
    ) -> None:
        """After the request went out in place (`channel`, `ts`): a DM copy to every other Slack approver.

        A copy that cannot be sent is logged, not retried: the request is out already, and
        retrying the send would post it again.
        """
        users = [u for u in slack_users(message.approvers) if u != message.address]
        team = (await self.api.me()).team
        copies: list[list[str]] = []
        for user in users:
            try:
                dm = (await self.api.call("conversations.open", users=user))["channel"]["id"]
                copy_ts = await post(message, f"to:{user}", channel=dm, text=text, blocks=blocks)
                await self.inbox.bind(f"{team}/{dm}/{copy_ts}", message.thread_id)
                copies.append([dm, copy_ts])
            except (DeliveryFailed, Unavailable, KeyError, TypeError) as exc:
                log.warning("an approver's copy was not sent", user=user, error=str(exc))
        record = {"thread": message.thread_id, "text": text, "channel": channel, "ts": ts, "copies": copies}
        await self.remember(record, [message.address, *users])

    async def remember(self, record: dict[str, Any], users: list[str]) -> None:
        """Note a request (an approval, a question) as waiting on `users`, for their Home tab.

        The thread's latest request is the one that counts (`latest:<thread>`), so a question
        asked again, or answered by text, never lingers.
        """
        record = {"kind": "approval", **record}
        try:
            await self.state.set(f"approval:{record['ts']}", json.dumps(record), ttl=self.ttl)
            await self.state.set(f"latest:{record['thread']}", record["ts"], ttl=self.ttl)
            for user in dict.fromkeys(u for u in users if u[:1] in ("U", "W")):
                await self.state.set_field(f"waiting:{user}", record["ts"], "1", ttl=self.ttl)
        except Unavailable as exc:  # the request is out; only the Home tab misses it
            log.warning("could not note a request for the Home tab", error=str(exc))

    async def decided(self, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """The receipt for the request at `ts`: every copy rewritten the way the request was (chat.update is idempotent)."""
        raw = await self.state.get(f"approval:{ts}")
        if raw is None:
            return
        for channel, copy_ts in json.loads(raw).get("copies", []):
            try:
                await self.api.call("chat.update", channel=channel, ts=copy_ts, text=text, blocks=blocks)
            except DeliveryFailed as exc:
                if exc.retryable:
                    raise  # the whole receipt again: every update is idempotent
                # A copy deleted, a DM closed: the decision stands, and the thread must not read as failed.
                log.warning("an approver's copy was not updated", channel=channel, ts=copy_ts, error=str(exc))
        await self.state.delete(f"approval:{ts}")

    # ------------------------------------------------------------ App Home
    async def home(self, user: str) -> None:
        """Publish `user`'s Home tab: the approvals and questions still waiting on them."""
        waiting = await self.state.fields(f"waiting:{user}")
        items = []
        for ts in sorted(waiting, key=float, reverse=True):
            raw = await self.state.get(f"approval:{ts}")
            if raw is None:
                continue
            record = json.loads(raw)
            status = "waiting_human" if record.get("kind") == "question" else "waiting_approval"
            latest = await self.state.get(f"latest:{record['thread']}")
            if latest == ts and await self.inbox.thread_status(record["thread"]) == status:
                items.append(record)
            if len(items) == HOME_MOST:
                break
        await self.api.call("views.publish", user_id=user, view=home_view(items))


def decision_view(choice: ApprovalChoice, place: tuple[str, str, str, str], request: str) -> dict[str, Any]:
    """The modal asking why; private_metadata carries the call and where the request was clicked."""
    _, channel, message_ts, root = place
    verb = "Approve" if choice.approved else "Deny"
    metadata = {"call_id": choice.call_id, "approved": choice.approved, "channel": channel, "ts": message_ts}
    return {
        "type": "modal",
        "callback_id": DECISION_VIEW,
        "private_metadata": json.dumps({**metadata, "root": root}),
        "title": {"type": "plain_text", "text": verb},
        "submit": {"type": "plain_text", "text": verb},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": request[:3000]}},
            {
                "type": "input",
                "block_id": REASON,
                "optional": choice.approved,  # a denial says why; an approval may
                "label": {"type": "plain_text", "text": "Why?"},
                "element": {"type": "plain_text_input", "action_id": REASON, "multiline": True, "max_length": 2000},
            },
        ],
    }


def from_submission(body: dict[str, Any], me: Me) -> Parsed | None:
    """A submitted reason modal as the decision it records; None for any other view."""
    view = _dict(body.get("view"))
    user = clicker(body)  # a user of another team is `team/user` here too
    if view.get("callback_id") != DECISION_VIEW or not user or not _str(view.get("id")):
        return None
    choice = approval_choice(view.get("private_metadata"))
    try:
        meta = json.loads(view.get("private_metadata") or "")
        place = (user, str(meta["channel"]), str(meta["ts"]), str(meta["root"]))
    except (ValueError, KeyError, TypeError):
        return None
    if choice is None:
        return None
    value = _dict(_dict(_dict(_dict(view.get("state")).get("values")).get(REASON)).get(REASON)).get("value")
    comment = value.strip() if isinstance(value, str) and value.strip() else None
    decision = choice.model_copy(update={"comment": comment})
    # A submission is not retried, and each opened modal has its own view id.
    return said_at(place, me, "approve" if choice.approved else "deny", f"view:{view['id']}", decision=decision)


def home_view(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The Home tab: a header, then each waiting request and where it was asked."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": "Waiting on you"}}]
    if not items:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "Nothing waits on you."}})
    for item in items:
        where = f"asked in <#{item['channel']}>" if item["channel"][:1] in ("C", "G") else "asked in a DM"
        if item.get("kind") == "question":
            where = f"a question for you, {where}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": item["text"][:3000]}})
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": where}]})
    return {"type": "home", "blocks": blocks}


def slack_users(identities: list[str]) -> list[str]:
    """The Slack user ids among `slack:U…` identities."""
    return [i.split(":", 1)[1] for i in identities if i.startswith("slack:") and i.split(":", 1)[1][:1] in ("U", "W")]
