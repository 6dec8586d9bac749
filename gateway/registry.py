"""How the core meets channels and agents: two small protocols and a loader.

The core imports no channel or agent by name. They are found from dotted
`module:attribute` names (FRONTDESK_CHANNELS, FRONTDESK_AGENTS, plus the built-in
packages), where the attribute is an object, a list of them, or a factory called
with the runtime.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gateway.errors import ConfigError
from gateway.events import Event, OutboundMessage, Thread

if TYPE_CHECKING:
    from fastapi import APIRouter

    from gateway.runtime import Runtime

BUILTIN_AGENTS = "agents:load_agents"
BUILTIN_CHANNELS = "channels:load_channels"


@dataclass
class Sent:
    """A provider accepted a message."""

    detail: str | None = None  # the provider's message id
    # The conversation the message opened or continued, so replies find the thread.
    conversation: str | None = None
    reply_to: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unconfigured:
    """What a channel factory returns, instead of None, when a setting the channel needs is absent.

    The channel stays off; a launch that names it as a contact is refused with `reason`.
    """

    name: str
    reason: str  # names the setting: "SLACK_BOT_TOKEN is not set"


@runtime_checkable
class Channel(Protocol):
    name: str
    # Whether a send whose outcome is unknown may be repeated: true where the
    # receiver deduplicates (mail by Message-ID, webhooks by webhook-id).
    resend_safe: bool

    def router(self) -> APIRouter | None: ...

    async def send(self, message: OutboundMessage) -> Sent: ...

    # Optional, found with getattr:
    #   async def complete(self, message: InboundMessage) -> InboundMessage | None
    #       run by the worker before routing: work kept off the request path (the
    #       full MIME parse); None drops the message (an auto-reply, a bounce).
    #   fresh_after_done: bool
    #       True where a conversation never ends (an SMS number pair): a message
    #       after the thread finished starts a new thread instead of waking it.
    #   def addressable(self, message: OutboundMessage) -> bool
    #       False when there is nowhere to send it (a webhook caller gave no
    #       callback URL and reads the thread through the API instead).
    #   def unreachable_reason(self, agent: str, contact: Contact) -> str | None
    #       why a thread of `agent` launched with `contact` could never reach them
    #       (naming the missing setting), or None; checked before the thread exists.
    #   async def serve(self, stop: asyncio.Event) -> None
    #       a long-running listener (the SMTP server, Slack Socket Mode), run by
    #       `frontdesk dev` and by the channel's own command until `stop` is set.


@runtime_checkable
class Agent(Protocol):
    name: str
    description: str

    def tools(self) -> list[dict[str, Any]]:
        """[{name, description, parameters, requires_approval}] for GET /api/v1/agents."""
        ...

    async def step(self, thread: Thread, event: Event | None) -> Thread:
        """Apply `event` (None: carry on) and take at most one turn: the stateless reducer."""
        ...


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


def instantiate(objs: list[Any], runtime: Runtime) -> list[Any]:
    """Each of `objs` as plugins: an object, a list of them, or a factory taking the runtime."""
    found: list[Any] = []
    for obj in objs:
        if callable(obj) and not hasattr(obj, "name"):
            obj = obj(runtime)
        if obj is not None:  # a channel factory returns None (or Unconfigured) when its settings are absent
            found.extend(obj if isinstance(obj, (list, tuple)) else [obj])
    return found


def load_plugins(paths: list[str], runtime: Runtime) -> list[Any]:
    return instantiate([load_object(path) for path in paths], runtime)
