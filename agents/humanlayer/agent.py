"""humanlayer: one request to a person per thread, asked on behalf of a HumanLayer SDK caller.

No model: the call says what to ask. The first turn asks it — an approval of `fn(**kwargs)`
or the question `msg` — of the contact the call named, and the person's answer ends the
thread with the outcome recorded. The caller runs the function itself (the SDK does, once it
reads the approval); nothing runs here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.events import (
    ApprovalRequested,
    Contact,
    DoneForNow,
    RequestHumanInput,
    Thread,
    UserMessage,
    last_active,
)
from gateway.humanlayer.service import public

if TYPE_CHECKING:
    from gateway.runtime import Runtime


NOT_A_CALL = "This address takes no messages: it asks people on behalf of HumanLayer SDK callers only."


def _choices(options: list[dict[str, Any]] | None) -> list[str]:
    return [o.get("title") or o["name"] for o in options or []]


class HumanLayerAgent:
    name = "humanlayer"
    description = "Asks a person what a HumanLayer SDK caller needs: an approval of a function call, or a question."

    def __init__(self, runtime: Runtime) -> None:
        self.settings = runtime.settings

    def tools(self) -> list[dict[str, Any]]:
        return []

    async def step(self, thread: Thread, event: Any | None) -> Thread:
        thread = thread if event is None else thread.with_events(event)
        last = last_active(thread.events) if thread.status == "running" else None
        if last is None:
            return thread  # waiting for the person, or done
        first = thread.events[0]
        record = (first.data or {}).get("humanlayer") if isinstance(first, UserMessage) else None
        if not isinstance(record, dict):
            # Mail to humanlayer@<domain>, a launch naming this agent: it has nothing to say to them.
            return thread.with_events(DoneForNow(text=NOT_A_CALL))
        match last[1].type:
            case "user_message":
                return thread.with_events(self._ask(record))
            case "approval_decision" | "human_response":
                return thread.with_events(self._done(thread, record, _outcome(last[1])))
            case _:  # an error or a timeout: the caller keeps polling; nothing is asked twice
                return thread.with_events(DoneForNow(text=f"stopped after {last[1].type}"))

    def _ask(self, record: dict[str, Any]) -> ApprovalRequested | RequestHumanInput:
        spec, contact = record["spec"], Contact.model_validate(record["contact"])
        allowed = record.get("allowed")
        slack = (spec.get("channel") or {}).get("slack") or {}
        # What the caller says about who is asked ("the finance channel"), shown to them too.
        context = slack.get("context_about_channel_or_user")
        note = f"Context: {context}" if context else None
        if record["type"] == "function_call":
            rejects = _choices(spec.get("reject_options"))
            if rejects:
                offer = "To deny, you may give one of these as the reason: " + " / ".join(rejects)
                note = f"{note}\n{offer}" if note else offer
            return ApprovalRequested(
                call_id=record["call_id"],
                tool=spec["fn"],
                arguments=spec["kwargs"],
                contact=contact,
                allowed=allowed,
                note=note,
            )
        choices = _choices(spec.get("response_options"))
        return RequestHumanInput(text=spec["msg"], choices=choices, contact=contact, allowed=allowed, note=note)

    def _done(self, thread: Thread, record: dict[str, Any], text: str) -> DoneForNow:
        """The end, with the completed call for each FRONTDESK_HUMANLAYER_WEBHOOK_URLS receiver (v1beta2 envelope)."""
        urls = [u.strip() for u in self.settings.humanlayer_webhook_urls.split(",") if u.strip()]
        if not urls:
            return DoneForNow(text=text)
        envelope = {"type": f"{record['type']}.completed", "is_test": False, "event": public(thread)}
        return DoneForNow(text=text, notify=[Contact(channel="webhook", address=u) for u in urls], payload=envelope)


def _outcome(event: Any) -> str:
    if event.type == "approval_decision":
        verdict = "approved" if event.approved else "denied"
        return f"{verdict} by {event.by}" + (f": {event.comment}" if event.comment else "")
    return f"answered by {event.sender}: {event.text}"
