"""Starting a thread from outside a conversation: the API, the CLI and cron share it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import InboundRejected, UnknownAgent
from gateway.events import Contact, Thread, UserMessage

if TYPE_CHECKING:
    from gateway.runtime import Runtime


async def launch_thread(
    rt: Runtime,
    agent: str,
    text: str,
    contact: Contact | None = None,
    *,
    channel: str = "api",
    by: str = "api",
    thread_id: str | None = None,
) -> Thread | None:
    """Create a thread and queue its first turn; None if `thread_id` exists already.

    With a `contact`, the thread's questions, approvals and answer go to that
    person on that channel, and their reply there resumes it (an outer-loop agent).
    """
    if agent not in rt.agents:
        raise UnknownAgent(f"no agent named {agent!r}")
    reason = unreachable(rt, agent, contact) if contact is not None else None
    if reason is not None:
        raise InboundRejected(reason, status=422)
    origin = contact or Contact(channel=channel, address=by)
    responders, approvers = rt.router.people(agent, origin, contact)
    thread = Thread(
        id=thread_id or rt.keys.new_thread_id(),
        agent=agent,
        origin=origin,
        responders=responders,
        approvers=approvers,
        events=[UserMessage(text=text, sender=f"{channel}:{by}" if channel != "api" else by, channel=channel)],
    )
    return thread if await rt.store.create(thread) else None


def unreachable(rt: Runtime, agent: str, contact: Contact) -> str | None:
    """Why `agent` could never reach `contact` (naming the missing setting), or None.

    Checked before anything is written: a thread whose every message would fail is refused
    at launch, not created to fail a moment later.
    """
    channel = rt.channels.get(contact.channel)
    if channel is None:
        missing = rt.unconfigured.get(contact.channel)
        return f"channel {contact.channel!r} is not configured" + (f": {missing}" if missing else "")
    # Optional channel member (gateway.registry.Channel); a channel without it reaches everyone.
    reason = channel.unreachable_reason(agent, contact)
    return f"cannot reach {contact.channel}:{contact.address}: {reason}" if reason else None
