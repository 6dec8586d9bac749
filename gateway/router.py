"""The router: which agent a message goes to, and what it means for its thread.

At ingest, `route` maps (channel, our address) to an agent: a route named in
frontdesk.toml, else the defaults (mail to `<agent>@<domain>`, everything else to
FRONTDESK_DEFAULT_AGENT).

At apply time, inside the thread's single writer, `decide` turns an entry into
the event to apply: a reply to a thread that waits for a person becomes
`human_response` or `approval_decision` — after the sender is checked against the
people the thread asked — and anything else a `user_message`. A sender who may
not answer gets a short note back and a `note` on the thread, nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import FrontdeskConfig, parse_identity
from gateway.errors import Malformed
from gateway.events import (
    DEAD_LETTER,
    ApprovalDecision,
    Contact,
    DeliveryEvent,
    Error,
    EventAdapter,
    HumanResponse,
    InboundMessage,
    Note,
    Thread,
    Timeout,
    UserMessage,
    last_active,
    note_call_id,
    pending_request,
)
from gateway.store.entries import Entry

_YES = {"yes", "y", "approve", "approved", "ok", "okay"}
_NO = {"no", "n", "deny", "denied", "reject"}
MAX_UNVERIFIED_REPLIES = 3  # answers (each with a fresh link) per call and sender to unauthenticated mail
_FIRST_WORD = re.compile(r"^\s*([A-Za-z]+)[\s.,:;!-]*(.*)$", re.S)


@dataclass
class Decision:
    """What one entry does to its thread."""

    event: Any | None = None  # the event to apply; None: the entry changes nothing
    wake: bool = False  # whether the agent takes a turn after it
    notice: str | None = None  # a short reply to the sender, sent on their channel
    notice_to: Contact | None = None
    new_thread: Thread | None = None


def _dead_lettered(thread: Thread) -> bool:
    """Whether the thread stopped because its last step was dead-lettered."""
    last = last_active(thread.events)
    return last is not None and isinstance(last[1], Error) and last[1].kind == DEAD_LETTER


def _allowed(allowed: list[str], msg: InboundMessage) -> bool:
    """Whether a request's own list admits the sender: by identity, or a group it names (`slack:C…`) by writing there."""
    return msg.identity in allowed or (msg.group is not None and f"{msg.channel}:{msg.group}" in allowed)


def _same_request(waiting: Any, asked: dict[str, Any]) -> bool:
    """Whether `asked` (an event's data) is the request the thread waits on, asked again."""
    if asked.get("type") != waiting.type:
        return False
    return waiting.type != "approval_requested" or asked.get("call_id") == waiting.call_id


def approval_answer(text: str) -> tuple[bool, str | None] | None:
    """YES/NO (and synonyms) as the first word, the rest a comment; None if neither."""
    match = _FIRST_WORD.match(text or "")
    if not match:
        return None
    word = match.group(1).lower()
    comment = match.group(2).strip() or None
    if word in _YES:
        return True, comment
    if word in _NO:
        return False, comment
    return None


class Router:
    def __init__(
        self,
        config: FrontdeskConfig,
        agent_names: set[str],
        default_agent: str,
        email_domain: str,
        approval_link: Callable[[str, str, str], str | None] | None = None,
    ) -> None:
        self.config = config
        # (thread id, call id, identity) -> a signed one-time link to decide that call (gateway.links).
        self.approval_link = approval_link
        self.agent_names = agent_names
        self.default_agent = default_agent
        self.email_domain = email_domain.lower()
        self._routes: dict[tuple[str, str], str] = {}
        for name, agent in config.agents.items():
            for channel in ("slack", "sms", "whatsapp", "email"):
                for address in getattr(agent.routes, channel):
                    self._routes[(channel, address.lower())] = name
        # Decided once: config.agent() builds a default model for an unlisted agent on every call.
        self._webhooks = {name for name in agent_names if config.agent(name).routes.webhook}
        # The channels whose decisions count only where the request was sent (set once the
        # channels are loaded, from `Channel.decisions_where_asked`; see `_asked_here`).
        self.decisions_where_asked: set[str] = set()

    # ------------------------------------------------------------ ingest
    def route(self, channel: str, address: str) -> str | None:
        """The agent that answers `address` on `channel`, or None if no one does."""
        address = (address or "").lower()
        if (channel, address) in self._routes:
            return self._routes[(channel, address)]
        if channel == "slack" and "/" in address:
            # team/channel: a route may name just the channel
            name = self._routes.get((channel, address.rsplit("/", 1)[-1]))
            if name:
                return name
        if channel == "email":
            local, _, domain = address.partition("@")
            local = local.split("+", 1)[0]
            if domain == self.email_domain and local in self.agent_names:
                return local
            return None
        if channel == "webhook":
            return address if address in self._webhooks else None
        return self.default_agent if self.default_agent in self.agent_names else None

    def routes_by_agent(self, channels) -> dict[str, list[dict[str, str]]]:
        """Each agent's addresses per channel, defaults included (for GET /api/v1/agents)."""
        out: dict[str, list[dict[str, str]]] = {name: [] for name in self.agent_names}
        for (channel, address), name in self._routes.items():
            out[name].append({"channel": channel, "address": address})
        for name in self.agent_names:
            if "email" in channels:
                out[name].append({"channel": "email", "address": f"{name}@{self.email_domain}"})
            if "webhook" in channels and self.config.agent(name).routes.webhook:
                out[name].append({"channel": "webhook", "address": f"/webhooks/{name}"})
        if self.default_agent in out:
            for channel in ("slack", "sms", "whatsapp"):
                if channel in channels:
                    out[self.default_agent].append({"channel": channel, "address": "*"})
        return out

    def email_addresses(self) -> set[str]:
        configured = {a.lower() for (c, a) in self._routes if c == "email"}
        return configured | {f"{name}@{self.email_domain}" for name in self.agent_names}

    def people(self, agent: str, origin: Contact, contact: Contact | None = None) -> tuple[list[str], list[str]]:
        """(responders, approvers) of a new thread."""
        cfg = self.config.agent(agent)
        own = [c.identity for c in (origin, contact) if c is not None and c.channel not in ("api", "cron")]
        responders = list(dict.fromkeys([*own, *cfg.responders]))
        approvers = list(dict.fromkeys(cfg.approvers or own))
        return responders, approvers

    def named_contact(self, agent: str, name: str) -> Contact | None:
        value = self.config.agent(agent).contacts.get(name)
        return parse_identity(value) if value else None

    # ------------------------------------------------------------ apply
    def decide(self, thread: Thread | None, entry: Entry) -> Decision:
        data = entry.data or {}
        if entry.kind == "ignored":
            return Decision()
        if entry.kind == "continue":
            # A `continue` replayed from the dead-letter stream resumes the thread it failed on.
            return Decision(wake=thread is not None and (thread.status == "running" or _dead_lettered(thread)))
        if entry.kind == "delivery":
            return Decision(event=DeliveryEvent.model_validate(data))
        if entry.kind == "note":  # an operator's action (a retry, a replay), recorded by the thread's writer
            return Decision(event=Note.model_validate(data))
        if entry.kind == "timeout":
            return self._timeout(thread, data)
        if entry.kind == "resume":
            return self._resume(thread, data)
        if entry.kind == "inbound":
            return self._inbound(thread, entry, InboundMessage.model_validate(data))
        raise Malformed(f"unknown entry kind {entry.kind!r}")

    def _inbound(self, thread: Thread | None, entry: Entry, msg: InboundMessage) -> Decision:
        said: dict[str, Any] = dict(
            id=msg.id,
            text=msg.text,
            sender=msg.identity,
            channel=msg.channel,
            reply_to=msg.reply_to,
            attachments=msg.attachments,
            data=msg.data,
            full_text=msg.full_text,
            at=msg.received_at,
        )
        if thread is None:
            origin = Contact(
                channel=msg.channel, address=msg.sender, conversation=msg.conversation, reply_to=msg.reply_to
            )
            responders, approvers = self.people(entry.agent, origin)
            new = Thread(
                id=entry.thread_id, agent=entry.agent, origin=origin, responders=responders, approvers=approvers
            )
            return Decision(event=UserMessage(**said), wake=True, new_thread=new)
        if any(getattr(e, "id", None) == msg.id for e in thread.events[-50:]):
            return Decision()  # already applied (a forward or replay that slipped past dedupe)
        waiting = pending_request(thread.events)
        sender_contact = Contact(channel=msg.channel, address=msg.sender, reply_to=msg.reply_to)
        # A click on a question's choice button answers that question only: a stale one must
        # never be read as YES/NO to an approval asked since.
        if msg.choice is not None and (waiting is None or waiting[1].type != "request_human_input"):
            return Decision(event=Note(kind="stale_choice", text=msg.text[:200], sender=msg.identity, id=msg.id))
        if msg.decision is not None and (waiting is None or waiting[1].type != "approval_requested"):
            # A second click on a button already decided: it is not something said to the agent.
            return Decision(
                event=Note(
                    kind="stale_decision", text=f"decision for {msg.decision.call_id}", sender=msg.identity, id=msg.id
                )
            )
        if waiting is None:
            # A running thread already has a `continue` queued; it will read this message.
            return Decision(event=UserMessage(**said), wake=thread.status != "running")
        index, request = waiting
        if request.type == "request_human_input":
            if not self._may_answer(thread, request, msg):
                return self._refuse(msg, sender_contact, "Thanks — this question is waiting for someone else's answer.")
            if msg.unverified and not self.config.agent(thread.agent).unverified_answers:
                return self._unverified(thread, msg, None)
            return Decision(event=HumanResponse(**said), wake=True)
        # waiting for an approval
        if not self._may_approve(thread, request, msg):
            return self._refuse(msg, sender_contact, "Sorry — you are not one of the approvers for this request.")
        if msg.unverified:
            return self._unverified(thread, msg, request.call_id)
        if msg.channel in self.decisions_where_asked and not _asked_here(thread, index, msg):
            return self._refuse(msg, sender_contact, "Sorry — please answer this request where it was sent to you.")
        if msg.decision is not None:
            if msg.decision.call_id != request.call_id:
                return Decision(
                    event=Note(
                        kind="stale_decision",
                        text=f"decision for {msg.decision.call_id}",
                        sender=msg.identity,
                        id=msg.id,
                    )
                )
            approved, comment = msg.decision.approved, msg.decision.comment
        else:
            answer = approval_answer(msg.text)
            if answer is None:
                asked_again = any(
                    isinstance(e, Note) and e.kind == "unclear_approval" and note_call_id(e) == request.call_id
                    for e in thread.events
                )
                note = Note(
                    kind="unclear_approval", text=msg.text, call_id=request.call_id, sender=msg.identity, id=msg.id
                )
                if asked_again:
                    return Decision(event=note)
                return Decision(
                    event=note,
                    notice="Please reply YES to approve or NO to deny (a comment may follow).",
                    notice_to=sender_contact,
                )
            approved, comment = answer
        return Decision(
            event=ApprovalDecision(
                call_id=request.call_id, approved=approved, comment=comment, by=msg.identity, id=msg.id
            ),
            wake=True,
        )

    def _resume(self, thread: Thread | None, data: dict[str, Any]) -> Decision:
        if thread is None:
            raise Malformed("resume for a thread that does not exist")
        waiting = pending_request(thread.events)
        kind, by = data.get("type"), data.get("by") or "api"
        if kind == "human_response" and waiting and waiting[1].type == "request_human_input":
            return Decision(
                event=HumanResponse(
                    text=data.get("text", ""),
                    sender=by,
                    channel=by.split(":", 1)[0],
                    id=data.get("id"),
                    data=data.get("data"),
                ),
                wake=True,
            )
        if (
            kind == "approval_decision"
            and waiting
            and waiting[1].type == "approval_requested"
            and waiting[1].call_id == data.get("call_id")
        ):
            return Decision(
                event=ApprovalDecision(
                    call_id=data["call_id"],
                    approved=bool(data.get("approved")),
                    comment=data.get("comment"),
                    by=by,
                    id=data.get("id"),
                ),
                wake=True,
            )
        if kind == "escalation" and waiting and _same_request(waiting[1], data.get("event") or {}):
            # The pending request asked again, of someone else (gateway/humanlayer): it still waits.
            return Decision(event=EventAdapter.validate_python(data["event"]))
        # A second copy of a resume, or one that lost a race: it changes nothing.
        return Decision(
            event=Note(kind="stale_resume", text=f"{kind} no longer expected", sender=by, id=data.get("id"))
        )

    def _timeout(self, thread: Thread | None, data: dict[str, Any]) -> Decision:
        index = int(data.get("request_index", -1))
        waiting = pending_request(thread.events) if thread else None
        if waiting is None or waiting[0] != index:
            return Decision()  # answered in time
        return Decision(event=Timeout(request_index=index), wake=True)

    # ------------------------------------------------------------ who may
    def _may_answer(self, thread: Thread, request: Any, msg: InboundMessage) -> bool:
        if request.allowed is not None:
            return _allowed(request.allowed, msg)
        asked = request.contact.identity if request.contact else thread.origin.identity
        in_group = msg.group is not None and f"{msg.channel}:{msg.group}" == asked
        return msg.identity in thread.responders or msg.identity == asked or in_group

    def _may_approve(self, thread: Thread, request: Any, msg: InboundMessage) -> bool:
        if request.allowed is not None:
            return _allowed(request.allowed, msg)
        asked = request.contact.identity if request.contact else None
        # An approval asked of a group (a Slack channel) may be given by anyone writing there.
        in_group = asked is not None and msg.group is not None and f"{msg.channel}:{msg.group}" == asked
        return msg.identity in thread.approvers or msg.identity == asked or in_group

    def _unverified(self, thread: Thread, msg: InboundMessage, call_id: str | None) -> Decision:
        """An approver (or responder) whose message the channel could not authenticate: note it, say what works."""
        reason = (msg.unverified or "")[:300]
        note = Note(kind="unverified_sender", text=reason, call_id=call_id, sender=msg.identity, id=msg.id)
        told = sum(
            isinstance(e, Note) and e.kind == "unverified_sender" and e.call_id == call_id and e.sender == msg.identity
            for e in thread.events
        )
        if told >= MAX_UNVERIFIED_REPLIES:
            # Forged mail in a flood would otherwise make us mail the real person a link per forgery.
            return Decision(event=note)
        if call_id is None:
            text = (
                f"Your message could not be authenticated ({reason}), so it was not taken as an answer. "
                "Please answer from an authenticated account or another channel."
            )
        else:
            text = f"Your message could not be authenticated ({reason}), so it was not taken as a decision. "
            link = self.approval_link(thread.id, call_id, msg.identity) if self.approval_link else None
            if link:
                text += f"To approve or deny, open this link (it works once): {link}"
            else:
                text += "Please decide from the dashboard or another channel."
        # To the address the sender claims, never to a Reply-To they chose: the link proves that mailbox.
        to = Contact(
            channel=msg.channel,
            address=msg.sender,
            reply_to={k: v for k, v in msg.reply_to.items() if k != "to"},
        )
        return Decision(event=note, notice=text, notice_to=to)

    def _refuse(self, msg: InboundMessage, to: Contact, text: str) -> Decision:
        note = Note(kind="refused", text=(msg.text or "")[:200], sender=msg.identity, id=msg.id)
        return Decision(event=note, notice=text, notice_to=to)


def _asked_here(thread: Thread, index: int, msg: InboundMessage) -> bool:
    """Whether a decision comes from a conversation the approval request (event `index`) was sent on.

    For a channel whose conversations name both ends (`Channel.decisions_where_asked`:
    an SMS pair `theirs/ours`, a Slack `team/channel/thread`) each send records the
    conversation it opened. A decision from another conversation of that channel —
    the approver's number writing to another of our numbers, a different `To`, a
    click from another team — is refused, even when that conversation is bound to
    this thread too. A conversation *containing* the one sent on counts (a Slack DM's
    root, `team/D1`, holds its threads `team/D1/ts`). Where the send named no
    conversation (a Messaging Service that had not said which number it used),
    nothing is known to compare with, and the sender check alone decides.
    """
    outbound_id = f"{thread.id}-{index}"
    sent_on = {
        e.contact.conversation
        for e in thread.events
        if isinstance(e, DeliveryEvent)
        and e.outbound_id == outbound_id
        and e.status in ("sent", "delivered")
        and e.contact is not None
        and e.contact.channel == msg.channel
        and e.contact.conversation
    }
    here = msg.conversation
    return not sent_on or any(here == sent or sent.startswith(here + "/") for sent in sent_on)
