"""WhatsApp's 24-hour customer service window, as far as frontdesk has seen it.

A business may send free text to a WhatsApp user only within 24 hours of that user's last
message; outside it, only a template WhatsApp approved (sent by `ContentSid`), and Twilio
fails free text with error 63016 (https://www.twilio.com/docs/api/errors/63016). The window
is between one user and one of our senders, so it is kept per (their address, ours): the
time of their last message, in the channel's own keys, expiring with the window.
"""

from __future__ import annotations

import time

from gateway.protocols import ChannelState

WINDOW = 24 * 3600
# Our clock stamps a message after Twilio received it, and a message created just inside the
# window may leave Twilio's queue after it closed: five minutes early, free text stops.
MARGIN = 300


class SessionWindow:
    """When each user last wrote to each of our senders."""

    def __init__(self, state: ChannelState) -> None:
        self.state = state

    async def opened(self, their: str, ours: str, at: float | None = None) -> None:
        """`their` wrote to `ours` (at `at`, default now): the window runs for 24 hours from then."""
        at = time.time() if at is None else at
        left = int(at + WINDOW - time.time())
        if left > 0:  # a message replayed days later opens nothing
            await self.state.set(_key(their, ours), repr(at), ttl=left)

    async def last(self, their: str, ours: str) -> float | None:
        """When `their` last wrote to `ours`, if within the last 24 hours."""
        value = await self.state.get(_key(their, ours))
        return float(value) if value else None

    async def is_open(self, their: str, ours: str, now: float | None = None) -> bool:
        last = await self.last(their, ours)
        return last is not None and (time.time() if now is None else now) - last < WINDOW - MARGIN

    async def close(self, their: str, ours: str) -> None:
        """Twilio said the window is closed (63016): believe it over our own record."""
        await self.state.delete(_key(their, ours))


def _key(their: str, ours: str) -> str:
    return f"window:{their}/{ours}"
