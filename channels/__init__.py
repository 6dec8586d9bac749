"""Channel adapters: each turns a provider's inbound request into an InboundMessage
and delivers an OutboundMessage through the provider's API."""

from __future__ import annotations

from typing import Any


def load_channels(runtime: Any) -> list[Any]:
    """The built-in channels that the settings enable."""
    return []
