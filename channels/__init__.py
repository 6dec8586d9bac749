"""Channel adapters: each turns a provider's inbound request into an InboundMessage
and delivers an OutboundMessage through the provider's API.

Each channel module exposes `channel(context) -> Channel | None` (the contract:
`gateway.protocols`), returning None when the settings do not enable it (no
token, no relay), so that `load_channels` offers exactly the configured channels.
"""

from __future__ import annotations

import importlib

from gateway.protocols import Channel, ChannelContext

BUILTIN = ("channels.webhook", "channels.slack", "channels.sms", "channels.whatsapp", "channels.email")


def load_channels(context: ChannelContext) -> list[Channel]:
    """The built-in channels that the settings enable."""
    found = []
    for name in BUILTIN:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not part of this build
            raise
        channel = module.channel(context)
        if channel is not None:
            found.append(channel)
    return found
