"""A thread as a person reads it: who said what, on which channel, and what became of it.

Pure functions of the thread: the page, a live update and a test all build the
same items. A message the agent sent out is found by its outbound id (thread id
and event index, see gateway.outbox.compose), so each one shows the deliveries
that carried it; a failed delivery that nothing later settled offers a retry,
and a dead-lettered step offers a replay.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.events import DEAD_LETTER, Thread
from gateway.outbox import compose

_DEAD_ENTRY = re.compile(r"entry (\S+) dead-lettered")
_SPEAKS = {"request_human_input", "approval_requested", "done_for_now", "approval_decision", "note"}


@dataclass
class Item:
    """One event of the timeline with what the page shows beside it."""

    index: int
    event: Any
    side: str  # in (a person), out (the agent to a person), tool, system
    title: str
    to: str | None = None  # channel:address an outbound message went to
    deliveries: list[Any] = field(default_factory=list)
    retry: bool = False  # a failed delivery nothing later settled
    replay_source: str | None = None  # the stream id of a dead-lettered entry
    model_turn: bool = False

    @property
    def type(self) -> str:
        return self.event.type


def items(thread: Thread, start: int = 0) -> list[Item]:
    """The timeline items of events `start:`."""
    sent_to = {m.id: f"{m.channel}:{m.address}" for m in compose(thread, 0)}
    by_outbound: dict[str, list[Any]] = {}
    for event in thread.events:
        if event.type == "delivery":
            by_outbound.setdefault(event.outbound_id, []).append(event)
    out = []
    for index in range(start, len(thread.events)):
        event = thread.events[index]
        outbound_id = f"{thread.id}-{index}"
        item = Item(index=index, event=event, side=_side(event), title=_title(event))
        item.model_turn = getattr(event, "usage", None) is not None
        if event.type in _SPEAKS:
            item.deliveries = by_outbound.get(outbound_id, [])
            item.to = sent_to.get(outbound_id) or (f"{item.deliveries[0].channel}" if item.deliveries else None)
        if event.type == "delivery" and event.status in ("failed", "ambiguous"):
            later = by_outbound.get(event.outbound_id, [])
            item.retry = later[-1] is event
        if event.type == "error" and event.kind == DEAD_LETTER:
            match = _DEAD_ENTRY.search(event.message)
            item.replay_source = match.group(1) if match else None
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


def _side(event: Any) -> str:
    kind = event.type
    if kind in ("user_message", "human_response", "approval_decision"):
        return "in"
    if kind in ("request_human_input", "approval_requested", "done_for_now"):
        return "out"
    if kind in ("tool_call", "tool_result", "context"):
        return "tool"
    return "system"


def _title(event: Any) -> str:
    kind = event.type
    if kind == "user_message":
        return "Message in"
    if kind == "human_response":
        return "Answer in"
    if kind == "request_human_input":
        return "Question out"
    if kind == "approval_requested":
        return f"Approval requested: {event.tool}"
    if kind == "approval_decision":
        return "Decision"
    if kind == "done_for_now":
        return "Final answer out"
    if kind == "tool_call":
        return f"Tool call: {event.tool}"
    if kind == "tool_result":
        return "Tool result"
    if kind == "context":
        return f"Fetched: {event.name}"
    if kind == "error":
        return "Dead-lettered" if event.kind == DEAD_LETTER else f"Error: {event.kind}"
    if kind == "delivery":
        return f"Delivery {event.status}"
    if kind == "note":
        return f"Note: {event.kind.replace('_', ' ')}"
    if kind == "timeout":
        return "No answer before the deadline"
    return kind
