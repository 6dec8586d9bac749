"""Small agents and a channel for testing the runtime on its own.

They implement the same protocols as the real ones and are loaded the same way
(FRONTDESK_AGENTS / FRONTDESK_CHANNELS = "plugins:..."), so a worker started as a
subprocess by a test finds them too. The channel delivers to a real HTTP server
(the test's sink) at TEST_SINK_URL.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx

from gateway.errors import DeliveryFailed
from gateway.events import (
    ApprovalRequested,
    DoneForNow,
    OutboundMessage,
    RequestHumanInput,
    Thread,
    ToolCall,
    ToolResult,
)
from gateway.messages import Sent
from gateway.protocols import ChannelBase


def _last(thread: Thread):
    said = [e for e in thread.events if e.type not in ("delivery", "note")]
    return said[-1] if said else None


class EchoAgent:
    """Asks one question about what it was told, then finishes with the answer."""

    name = "echo"
    description = "asks back, then finishes"

    def tools(self) -> list[dict[str, Any]]:
        return []

    async def step(self, thread: Thread, event) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        last = _last(thread)
        if last.type == "user_message":
            return thread.with_events(RequestHumanInput(text=f"you said {last.text!r}?"))
        if last.type == "human_response":
            return thread.with_events(DoneForNow(text=f"ok: {last.text}"))
        return thread


class StepsAgent:
    """Takes `steps` tool turns (each `delay` seconds long) and then says it is done.

    The step count comes from the user's text ("steps=5"), so one agent serves many tests.
    """

    name = "steps"
    description = "counts tool steps"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = float(os.environ.get("TEST_STEP_DELAY", delay))

    def tools(self) -> list[dict[str, Any]]:
        return [
            {"name": "tick", "description": "one step", "parameters": {"type": "object"}, "requires_approval": False}
        ]

    async def step(self, thread: Thread, event) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        first = next(e for e in thread.events if e.type == "user_message")
        wanted = int(first.text.split("steps=", 1)[1].split()[0]) if "steps=" in first.text else 3
        done = sum(1 for e in thread.events if e.type == "tool_result")
        if _last(thread).type == "done_for_now":
            return thread
        if done >= wanted:
            return thread.with_events(DoneForNow(text=f"done after {done} steps"))
        if self.delay:
            await asyncio.sleep(self.delay)
        call_id = f"c{done}"
        return thread.with_events(
            ToolCall(call_id=call_id, tool="tick", arguments={"n": done}), ToolResult(call_id=call_id, result=done)
        )


class ApprovalAgent:
    """Asks for approval of a `deploy` call, then reports the decision."""

    name = "approver"
    description = "one gated call"

    def tools(self) -> list[dict[str, Any]]:
        return [
            {"name": "deploy", "description": "ship it", "parameters": {"type": "object"}, "requires_approval": True}
        ]

    async def step(self, thread: Thread, event) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        last = _last(thread)
        if last.type == "user_message":
            return thread.with_events(
                ApprovalRequested(call_id="call-1", tool="deploy", arguments={"version": last.text})
            )
        if last.type == "approval_decision":
            verdict = "approved" if last.approved else "denied"
            return thread.with_events(DoneForNow(text=f"{verdict} by {last.by}"))
        return thread


class FailingAgent:
    """Raises on every step: a bug in an agent must not stop the worker.

    With TEST_BROKEN_FIXED set (the bug "fixed" in a new deployment) it finishes instead,
    so a test can replay its dead letters and see the thread complete.
    """

    name = "broken"
    description = "always raises"

    def tools(self) -> list[dict[str, Any]]:
        return []

    async def step(self, thread: Thread, event) -> Thread:
        if not os.environ.get("TEST_BROKEN_FIXED"):
            raise RuntimeError("agent bug")
        if event is not None:
            thread = thread.with_events(event)
        return thread.with_events(DoneForNow(text="fixed"))


class SinkChannel(ChannelBase):
    """Delivers by POSTing the message as JSON to TEST_SINK_URL (a test's HTTP server)."""

    name = "test"
    resend_safe = False

    def __init__(self, url: str | None = None) -> None:
        self.url = url or os.environ["TEST_SINK_URL"]
        self.client = httpx.AsyncClient(timeout=5)

    async def send(self, message: OutboundMessage) -> Sent:
        try:
            r = await self.client.post(self.url, json=message.model_dump(mode="json"))
        except httpx.TimeoutException as exc:
            raise DeliveryFailed("timeout", ambiguous=True) from exc
        except httpx.TransportError as exc:
            raise DeliveryFailed(str(exc), retryable=True) from exc
        if r.status_code >= 400:
            retry_after = r.headers.get("retry-after")
            raise DeliveryFailed(
                f"sink said {r.status_code}",
                status=r.status_code,
                retryable=r.status_code == 429 or r.status_code >= 500,
                retry_after=float(retry_after) if retry_after else None,
            )
        return Sent(detail=r.headers.get("x-message-id"))

    async def aclose(self) -> None:
        await self.client.aclose()


def agents(runtime) -> list[Any]:
    return [EchoAgent(), StepsAgent(), ApprovalAgent(), FailingAgent()]


def channels(runtime) -> list[Any]:
    return [SinkChannel()]
