"""The data model: inbound and outbound messages, thread events, threads.

The thread — an ordered list of events — is the only state. Its status is derived
from its last events (`derive_status`), never stored as a separate truth; the copy
kept in Redis exists only so indexes can list threads by status.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, assert_never

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

ChannelName = Literal["slack", "sms", "whatsapp", "email", "webhook", "api", "cron", "dashboard"]
Status = Literal["running", "waiting_human", "waiting_approval", "done", "failed"]
STATUSES: tuple[Status, ...] = ("running", "waiting_human", "waiting_approval", "done", "failed")
# Thread format version: bump when the stored shape changes, and teach `Thread.load` the old one.
THREAD_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A time-ordered, unguessable id: 12 hex digits of milliseconds, then 10 random."""
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


class Attachment(BaseModel):
    """Metadata and a reference; the bytes never travel inside an event."""

    filename: str | None = None
    content_type: str = "application/octet-stream"
    size: int | None = None
    sha256: str | None = None
    ref: str  # where to fetch it: a provider URL or a store key


class Contact(BaseModel):
    """A channel address: where a person is reached, and how to answer in place."""

    channel: str
    address: str
    conversation: str | None = None
    reply_to: dict[str, Any] = Field(default_factory=dict)

    @property
    def identity(self) -> str:
        return f"{self.channel}:{self.address}"


class ApprovalChoice(BaseModel):
    call_id: str
    approved: bool
    comment: str | None = None


class InboundMessage(BaseModel):
    """One message as a channel adapter hands it to the core."""

    id: str  # the provider's idempotency key
    channel: str
    conversation: str  # the channel's thread key
    sender: str  # channel identity: Slack user id, E.164 number, email address
    text: str = ""
    address: str = ""  # ours: the Slack team/app, SMS number, mail address, webhook agent
    attachments: list[Attachment] = Field(default_factory=list)
    received_at: datetime = Field(default_factory=utcnow)
    reply_to: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] | None = None  # structured payload (webhooks)
    full_text: str | None = None  # e.g. the whole mail body, quotes included
    # An explicit answer to an approval (Slack button, dashboard), rather than free text.
    decision: ApprovalChoice | None = None
    # One of a question's choices, picked (a Slack button) rather than typed; it answers only that question.
    choice: str | None = None
    # The shared space it was written in (a Slack channel id): a question asked of
    # that group may be answered by anyone writing there.
    group: str | None = None
    # Why the channel cannot vouch that `sender` wrote this (mail failing DKIM/DMARC); None when it can.
    # Such a message may answer a question (if the agent allows it) but never decides an approval.
    unverified: str | None = None

    @property
    def identity(self) -> str:
        return f"{self.channel}:{self.sender}"


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None


class OutAction(BaseModel):
    """A button offered with an outbound message (approve / deny a call)."""

    call_id: str
    label: str
    approved: bool


OutKind = Literal["question", "approval", "final", "notice", "receipt"]


class OutboundMessage(BaseModel):
    """A message to deliver; `id` is thread id + event index, so a retry is recognisable."""

    id: str
    thread_id: str
    agent: str = ""  # whose voice: the From of a mail, the key that signs a callback
    channel: str
    address: str
    reply_to: dict[str, Any] = Field(default_factory=dict)
    text: str
    # question / approval / final come from the agent; notice answers a sender
    # (a refusal, a re-asked question); receipt reports an approval decision and
    # names in `updates` the provider id of the approval message it answers.
    kind: OutKind = "question"
    updates: str | None = None
    choices: list[str] = Field(default_factory=list)
    actions: list[OutAction] = Field(default_factory=list)
    # With an approval: every identity that may decide it, so a channel can ask each (Slack DMs a copy).
    approvers: list[str] = Field(default_factory=list)
    # For a question or a final answer: the tools the thread ran since a person last spoke, in
    # order, so a channel that can show work (Slack's streamed task steps) shows it.
    steps: list[str] = Field(default_factory=list)
    subject: str | None = None
    payload: dict[str, Any] | None = None  # a structured body a channel sends as is (a webhook's JSON)
    attempt: int = 0
    held: int = 0  # times the sender put it back behind an earlier message of its thread
    traceparent: str | None = None  # W3C trace context of the step that composed it (tracing on only)


# ---------------------------------------------------------------- events


class _Event(BaseModel):
    # Frozen: an event is a fact once it happened; a thread grows only by new ones. Readers
    # may keep what they derived from an event (the context renderer does) for as long as
    # they hold it.
    model_config = ConfigDict(extra="ignore", frozen=True)
    # Bookkeeping only (a delivery outcome, a note): it never changes what the thread waits for,
    # so whoever asks "what happened last" looks past it.
    passive: ClassVar[bool] = False

    at: datetime = Field(default_factory=utcnow)
    id: str | None = None  # the inbound id, where the event came from outside


class _Said(_Event):
    text: str
    sender: str | None = None
    channel: str | None = None
    reply_to: dict[str, Any] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list)
    data: dict[str, Any] | None = None
    full_text: str | None = None


class UserMessage(_Said):
    type: Literal["user_message"] = "user_message"


class HumanResponse(_Said):
    type: Literal["human_response"] = "human_response"


class ToolCall(_Event):
    type: Literal["tool_call"] = "tool_call"
    call_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    usage: Usage | None = None


class ToolResult(_Event):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    result: Any = None


class ContextFetched(_Event):
    """A deterministic pre-fetch (factor 13) whose result the model reads."""

    type: Literal["context"] = "context"
    name: str
    result: Any = None


class Error(_Event):
    type: Literal["error"] = "error"
    kind: str
    message: str
    usage: Usage | None = None
    # A dead letter's inbound stream id, the one a replay names (absent before it was recorded).
    source_id: str | None = None


class RequestHumanInput(_Event):
    type: Literal["request_human_input"] = "request_human_input"
    text: str
    choices: list[str] = Field(default_factory=list)
    urgency: Literal["low", "normal", "high"] = "normal"
    contact: Contact | None = None  # someone other than the thread's origin
    note: str | None = None  # said before the question: context for the person, an escalation's urgency
    # The identities that alone may answer (a HumanLayer call's allowed_responder_ids); None: the usual rule.
    allowed: list[str] | None = None
    deadline: datetime | None = None
    usage: Usage | None = None


class ApprovalRequested(_Event):
    type: Literal["approval_requested"] = "approval_requested"
    call_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    contact: Contact | None = None
    allowed: list[str] | None = None  # as on RequestHumanInput
    note: str | None = None  # as on RequestHumanInput
    usage: Usage | None = None


class ApprovalDecision(_Event):
    type: Literal["approval_decision"] = "approval_decision"
    call_id: str
    approved: bool
    comment: str | None = None
    by: str


class DoneForNow(_Event):
    type: Literal["done_for_now"] = "done_for_now"
    text: str
    usage: Usage | None = None
    # Told of the outcome besides the origin (a HumanLayer call's completion webhooks), each sent
    # `payload` as its body where the channel takes a structured one.
    notify: list[Contact] | None = None
    payload: dict[str, Any] | None = None


DeliveryStatus = Literal["queued", "sent", "delivered", "failed", "ambiguous"]


class DeliveryEvent(_Event):
    passive: ClassVar[bool] = True

    type: Literal["delivery"] = "delivery"
    outbound_id: str
    channel: str
    status: DeliveryStatus
    detail: str | None = None
    contact: Contact | None = None  # the conversation the send opened, to answer in place


class Note(_Event):
    """Recorded without changing what the thread waits for: a refused reply, a comment."""

    passive: ClassVar[bool] = True

    type: Literal["note"] = "note"
    kind: str
    text: str
    sender: str | None = None
    call_id: str | None = None  # the approval it is about (an unclear answer to it)


class Timeout(_Event):
    """A question's deadline passed without an answer; the agent decides what next."""

    type: Literal["timeout"] = "timeout"
    request_index: int


Event = Annotated[
    UserMessage
    | HumanResponse
    | ToolCall
    | ToolResult
    | ContextFetched
    | Error
    | RequestHumanInput
    | ApprovalRequested
    | ApprovalDecision
    | DoneForNow
    | DeliveryEvent
    | Note
    | Timeout,
    Field(discriminator="type"),
]
EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)

# An event that could not be applied and went to the dead-letter stream.
DEAD_LETTER = "dead_letter"


def derive_status(events: Sequence[Event]) -> Status:
    """The thread's status, read from its last events."""
    redelivered: set[str] = set()  # a failed delivery retried later (a dead letter replayed)
    for event in reversed(events):
        if not event.passive:
            return _status_after(event)
        if event.type == "delivery":
            if event.status == "failed" and event.outbound_id not in redelivered:
                return "failed"
            redelivered.add(event.outbound_id)
    return "running"


def _status_after(event: Event) -> Status:
    """What a thread waits for when `event` is the last that is not bookkeeping.

    Every dispatch over event kinds matches the `type` tag: mypy narrows the event by it and
    `assert_never` makes a kind left out an error, at the cost of a string compare (a class
    pattern's isinstance on a pydantic model costs several times that, and this runs per step).
    """
    match event.type:
        case "request_human_input":
            return "waiting_human"
        case "approval_requested":
            return "waiting_approval"
        case "done_for_now":
            return "done"
        case "error":
            return "failed" if event.kind == DEAD_LETTER else "running"
        case "user_message" | "human_response" | "tool_call" | "tool_result" | "context":
            return "running"
        case "approval_decision" | "timeout":
            return "running"  # the agent takes its turn
        case "delivery" | "note":
            return "running"  # passive: derive_status looks past these before it asks
        case _:
            assert_never(event.type)


def last_active(events: Sequence[Event]) -> tuple[int, Event] | None:
    """The (index, event) of the last event that is not bookkeeping (`passive`), else None."""
    for index in range(len(events) - 1, -1, -1):
        if not events[index].passive:
            return index, events[index]
    return None


def pending_request(events: Sequence[Event]) -> tuple[int, RequestHumanInput | ApprovalRequested] | None:
    """The (index, event) the thread waits on: a question or an approval, else None."""
    last = last_active(events)
    if last is None:
        return None
    index, event = last
    if event.type == "request_human_input" or event.type == "approval_requested":
        return index, event
    return None


_OLD_DEAD_LETTER = re.compile(r"\S+ entry (\S+) dead-lettered")


def dead_letter_source(error: Error) -> str | None:
    """The inbound stream id a dead-letter error names, for a replay; None for any other error.

    Errors written before `source_id` existed carry the id only in their message, which the
    worker wrote as "<kind> entry <stream id> dead-lettered: <reason>"; threads stored then are
    read here, and nowhere else parses it.
    """
    if error.kind != DEAD_LETTER:
        return None
    if error.source_id is not None:
        return error.source_id
    old = _OLD_DEAD_LETTER.match(error.message)
    return old.group(1) if old else None


def note_call_id(note: Note) -> str | None:
    """The approval call a note is about, if any.

    Unclear answers to an approval were noted before `call_id` existed with the call id only
    at the start of their text ("<call id>: <what was said>"); threads stored then are read
    here, and nowhere else parses it.
    """
    if note.call_id is not None or note.kind != "unclear_approval":
        return note.call_id
    call_id, found, _ = note.text.partition(": ")
    return call_id if found else None


class Thread(BaseModel):
    """An agent's whole state: who it serves and what has happened, in order."""

    id: str
    agent: str
    origin: Contact
    events: list[Event] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    responders: list[str] = Field(default_factory=list)  # identities that may answer
    approvers: list[str] = Field(default_factory=list)  # identities that may approve
    version: int = THREAD_VERSION

    @property
    def status(self) -> Status:
        return derive_status(self.events)

    def with_events(self, *events: Any) -> Thread:
        """A copy with `events` appended (the reducer's only way to change a thread)."""
        return self.model_copy(update={"events": [*self.events, *events], "updated_at": utcnow()})

    def public(self) -> dict[str, Any]:
        """The API shape: {id, agent, status, origin, events, ...}."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["status"] = self.status
        return data
