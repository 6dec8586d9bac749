"""The plugin loader: channels and agents found from dotted names.

The core imports no channel or agent by name. They are found from dotted
`module:attribute` names (FRONTDESK_CHANNELS, FRONTDESK_AGENTS, plus the built-in
packages), where the attribute is an object, a list of them, or a factory: an
agent factory is called with the runtime, a channel factory with its
`ChannelContext`. The contract they implement is `gateway.protocols` (re-exported
here for the code that imported it from this module).
"""

from __future__ import annotations

import importlib
from typing import Any

from gateway.errors import ConfigError
from gateway.messages import Sent
from gateway.protocols import Agent, Channel, ChannelBase, Listener, Unconfigured

__all__ = [
    "BUILTIN_AGENTS",
    "BUILTIN_CHANNELS",
    "Agent",
    "Channel",
    "ChannelBase",
    "Listener",
    "Sent",
    "Unconfigured",
    "instantiate",
    "load_object",
    "load_plugins",
]

BUILTIN_AGENTS = "agents:load_agents"
BUILTIN_CHANNELS = "channels:load_channels"


def load_object(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} (from {path!r}): {exc}") from exc
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from None


def instantiate(objs: list[Any], given: Any) -> list[Any]:
    """Each of `objs` as plugins: an object, a list of them, or a factory called with `given`."""
    found: list[Any] = []
    for obj in objs:
        if callable(obj) and not hasattr(obj, "name"):
            obj = obj(given)
        if obj is not None:  # a channel factory returns None (or Unconfigured) when its settings are absent
            found.extend(obj if isinstance(obj, (list, tuple)) else [obj])
    return found


def load_plugins(paths: list[str], given: Any) -> list[Any]:
    return instantiate([load_object(path) for path in paths], given)
