"""The messages a channel exchanges with the core: a contract module channels import.

The message models themselves live in `gateway.events` (agents import them from
there); they are re-exported here so a channel needs only this module, together
with what the core answers it: `Sent` (a provider took a message) and `Accepted`
(what became of an inbound one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.events import (
    ApprovalChoice,
    Attachment,
    Contact,
    DeliveryEvent,
    DeliveryStatus,
    InboundMessage,
    OutAction,
    OutboundMessage,
)

__all__ = [
    "Accepted",
    "ApprovalChoice",
    "Attachment",
    "Contact",
    "DeliveryEvent",
    "DeliveryStatus",
    "InboundMessage",
    "OutAction",
    "OutboundMessage",
    "Outcome",
    "Progress",
    "Sent",
]

# What became of an inbound message: enqueued, a provider's retry of one that was,
# dropped because it may only continue a thread and there is none, or over the sender's rate.
Outcome = Literal["new", "duplicate", "ignored", "limited"]


@dataclass
class Sent:
    """A provider accepted a message."""

    detail: str | None = None  # the provider's message id
    # The conversation the message opened or continued, so replies find the thread.
    conversation: str | None = None
    reply_to: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    """What the inbox did with an inbound message; `gateway.errors.answer` says what the caller gets back."""

    thread_id: str
    duplicate: bool = False
    ignored: bool = False  # only_existing was set and the conversation has no thread
    limited: bool = False  # the sender is over its rate; nothing was enqueued
    retry_after: int = 0  # with `limited`: seconds until the sender's window ends

    @property
    def outcome(self) -> Outcome:
        if self.duplicate:
            return "duplicate"
        if self.limited:
            return "limited"
        return "ignored" if self.ignored else "new"


@dataclass(frozen=True)
class Progress:
    """What a thread is doing now, for a channel that can show it (`gateway.protocols.ShowsProgress`).

    `doing` None: nothing any more (the thread waits for a person, finished, or its step
    failed), so whatever the channel shows must go.
    """

    thread_id: str
    agent: str
    conversation: str | None  # the origin's conversation on its channel
    reply_to: dict[str, Any]  # the origin's reply_to: where the person is
    doing: str | None  # one short line: "Running lookup_order"
    details: list[str] = field(default_factory=list)  # more lines a channel may rotate through
