"""Opt-out keywords and the record of who opted out.

The keywords are the carriers' standard ones that Twilio also honours
(https://help.twilio.com/articles/223134027): matched against the whole message,
trimmed, in any case. They never reach an agent. YES opts back in only for a
number that has opted out; from anyone else it is an ordinary answer (an approval).
"""

from __future__ import annotations

import time
from typing import Literal

from gateway.protocols import ChannelState

STOP = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START = frozenset({"START", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})
START_IF_OPTED_OUT = frozenset({"YES"})

Keyword = Literal["stop", "start", "help", "yes"]


def keyword(text: str) -> Keyword | None:
    """Which keyword the whole message is, if any."""
    word = (text or "").strip().upper()
    if word in STOP:
        return "stop"
    if word in START:
        return "start"
    if word in HELP:
        return "help"
    if word in START_IF_OPTED_OUT:
        return "yes"
    return None


class OptOuts:
    """Numbers that said STOP: one key each, kept until they say START (no expiry)."""

    def __init__(self, state: ChannelState) -> None:
        self.state = state

    async def add(self, number: str) -> None:
        await self.state.set(f"optout:{number}", str(int(time.time())))

    async def remove(self, number: str) -> bool:
        return await self.state.delete(f"optout:{number}")

    async def has(self, number: str) -> bool:
        return await self.state.exists(f"optout:{number}")
