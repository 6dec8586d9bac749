"""What a thread is doing while its step runs, told to the channel its person is on.

The worker calls `started` before an agent's turn and `ended` once the turn is saved
(or failed); a channel that can show work (`gateway.protocols.ShowsProgress`: Slack's
thread status) gets a `Progress`. Nothing here waits on a provider: the channel queues
its own calls, so a step costs a dict look-up for channels that show nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from gateway.events import ApprovalDecision, ApprovalRequested, Thread, ToolCall, ToolResult, last_active
from gateway.messages import Progress
from gateway.protocols import ShowsProgress

log = structlog.get_logger("frontdesk.progress")


class Reporter:
    """Tells each thread's origin channel, if it shows progress, when a step starts and ends."""

    def __init__(self, channels: Mapping[str, Any]) -> None:
        self.channels: dict[str, ShowsProgress] = {
            name: channel for name, channel in channels.items() if isinstance(channel, ShowsProgress)
        }

    def started(self, thread: Thread) -> None:
        self._tell(thread, True)

    def ended(self, thread: Thread) -> None:
        self._tell(thread, False)

    def _tell(self, thread: Thread, working: bool) -> None:
        channel = self.channels.get(thread.origin.channel)
        if channel is None:  # the common case: one look-up, nothing described
            return
        try:
            doing, details = describe(thread) if working else (None, [])
            channel.progress(
                Progress(
                    thread_id=thread.id,
                    agent=thread.agent,
                    conversation=thread.origin.conversation,
                    reply_to=thread.origin.reply_to,
                    doing=doing,
                    details=details,
                )
            )
        except Exception:  # showing progress is never worth failing a step over
            log.exception("progress not shown", channel=thread.origin.channel, thread_id=thread.id)


def describe(thread: Thread) -> tuple[str, list[str]]:
    """One line for what the next turn of `thread` does, and the lines around it."""
    last = last_active(thread.events)
    event = last[1] if last else None
    ran = [e.tool for e in thread.events if isinstance(e, ToolCall)][-3:]
    if isinstance(event, ApprovalDecision) and event.approved:
        tool = next(
            (
                e.tool
                for e in reversed(thread.events)
                if isinstance(e, ApprovalRequested) and e.call_id == event.call_id
            ),
            "the approved tool",
        )
        return f"Running {tool}", [f"Running {tool}…", "Approved: carrying it out…"]
    if isinstance(event, ToolResult):
        tool = next(
            (e.tool for e in reversed(thread.events) if isinstance(e, ToolCall) and e.call_id == event.call_id), ""
        )
        doing = f"Reading what {tool} returned" if tool else "Reading a tool's result"
        return doing, [f"{doing}…", *(f"Ran {t}…" for t in ran), "Deciding the next step…"]
    return "Thinking", ["Reading the thread…", *(f"Ran {t}…" for t in ran), "Deciding the next step…"]
