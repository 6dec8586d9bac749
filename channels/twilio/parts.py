"""Which parts of one outbound message Twilio already took, so that a retry sends only the rest.

Twilio has no idempotency key for Messages: a part created twice is two messages on the
person's phone. Each part's message SID is kept in the channel's state (a hash per outbound
message, `segments:<id>`) the moment Twilio answers, and a retry of the same outbound
message skips the parts found there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.protocols import ChannelState

T = TypeVar("T")


async def send_once(
    state: ChannelState,
    message_id: str,
    parts: list[tuple[str, T]],
    create: Callable[[T], Awaitable[str]],
    *,
    ttl: int,
) -> list[str]:
    """The SIDs of `parts` (name, what to send), in order; `create` sends one and returns its SID."""
    key = _key(message_id)
    went = await state.fields(key)
    sids = []
    for name, part in parts:
        sid = went.get(name)
        if sid is None:
            sid = await create(part)
            await state.set_field(key, name, sid, ttl=ttl)
        sids.append(sid)
    return sids


async def forget(state: ChannelState, message_id: str) -> None:
    """Drop the record of `message_id`'s parts: Twilio took them but failed them (a retry sends them again)."""
    await state.delete(_key(message_id))


def _key(message_id: str) -> str:
    return f"segments:{message_id}"
