"""A thread as a person reads it: who said what, on which channel, and what became of it.

Pure functions of the thread: the page, a live update and a test all build the
same items. A message the agent sent out is found by its outbound id (thread id
and event index, see gateway.outbox.compose), so each one shows the deliveries
that carried it; a failed delivery that nothing later settled offers a retry,
and a dead-lettered step offers a replay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from gateway.events import DEAD_LETTER, DeliveryEvent, Error, Event, Thread, dead_letter_source
from gateway.outbox import compose

Side = Literal["in", "out", "tool", "system"]


@dataclass
class Item:
    """One event of the timeline with what the page shows beside it."""

    index: int
    event: Event
    side: Side  # in (a person), out (the agent to a person), tool, system
    title: str
    to: str | None = None  # channel:address an outbound message went to
    deliveries: list[DeliveryEvent] = field(default_factory=list)
    retry: bool = False  # a failed delivery nothing later settled
    replay_source: str | None = None  # the stream id of a dead-lettered entry
    model_turn: bool = False

    @property
    def type(self) -> str:
        return self.event.type


def items(thread: Thread, start: int = 0) -> list[Item]:
    """The timeline items of events `start:`."""
    sent_to = {m.id: f"{m.channel}:{m.address}" for m in compose(thread, 0)}
    by_outbound: dict[str, list[DeliveryEvent]] = {}
    for event in thread.events:
        if isinstance(event, DeliveryEvent):
            by_outbound.setdefault(event.outbound_id, []).append(event)
    out = []
    for index in range(start, len(thread.events)):
        event = thread.events[index]
        # An outbound id names the event that spoke (gateway.outbox.compose and notice), so only
        # an event that spoke to a person has deliveries under its own id.
        outbound_id = f"{thread.id}-{index}"
        item = Item(index=index, event=event, side=_side(event), title=_title(event))
        item.model_turn = getattr(event, "usage", None) is not None
        item.deliveries = by_outbound.get(outbound_id, [])
        item.to = sent_to.get(outbound_id) or (f"{item.deliveries[0].channel}" if item.deliveries else None)
        if isinstance(event, DeliveryEvent) and event.status in ("failed", "ambiguous"):
            item.retry = by_outbound[event.outbound_id][-1] is event
        if isinstance(event, Error):
            item.replay_source = dead_letter_source(event)
        out.append(item)
    return out


def speaking_index(outbound_id: str) -> int | None:
    """The event index an outbound id names (`<thread id>-<index>`)."""
    _, _, index = outbound_id.rpartition("-")
    return int(index) if index.isdigit() else None


def pretty(value: Any) -> str:
    """Arguments and results as indented JSON (strings as they are)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _side(event: Event) -> Side:
    match event.type:
        case "user_message" | "human_response" | "approval_decision":
            return "in"
        case "request_human_input" | "approval_requested" | "done_for_now":
            return "out"
        case "tool_call" | "tool_result" | "context":
            return "tool"
        case "error" | "delivery" | "note" | "timeout":
            return "system"
        case _:
            assert_never(event.type)


def _title(event: Event) -> str:
    match event.type:
        case "user_message":
            return "Message in"
        case "human_response":
            return "Answer in"
        case "request_human_input":
            return "Question out"
        case "approval_requested":
            return f"Approval requested: {event.tool}"
        case "approval_decision":
            return "Decision"
        case "done_for_now":
            return "Final answer out"
        case "tool_call":
            return f"Tool call: {event.tool}"
        case "tool_result":
            return "Tool result"
        case "context":
            return f"Fetched: {event.name}"
        case "error":
            return "Dead-lettered" if event.kind == DEAD_LETTER else f"Error: {event.kind}"
        case "delivery":
            return f"Delivery {event.status}"
        case "note":
            return f"Note: {event.kind.replace('_', ' ')}"
        case "timeout":
            return "No answer before the deadline"
        case _:
            assert_never(event.type)
