"""The contract between the core and its plugins: channels and agents.

A channel is an object with every member of `Channel`; subclass `ChannelBase` for
the defaults and write only what your provider needs. A channel that also runs a
long-lived listener (an SMTP server, a WebSocket) is a `Listener` too. Each channel
is built by a factory called with a `ChannelContext`: the settings, the process's
HTTP client, the channel's `Inbox` (everything it may do with the core's threads)
and `ChannelState` (its own Redis keys). Nothing else of the runtime reaches it.

An agent is an object with every member of `Agent`; one that can show the context
it would send its model (the dashboard's context panel) is a `ShowsContext` too.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gateway.errors import ConfigError
from gateway.events import Event, Thread
from gateway.messages import Accepted, Contact, DeliveryEvent, InboundMessage, OutboundMessage, Progress, Sent

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from fastapi import APIRouter

    from gateway.settings import Settings


# ---------------------------------------------------------------- what a channel is given


class Inbox(Protocol):
    """What a channel may do with the core's conversations and threads, for its own channel only.

    Redis being unreachable comes out of every method as `gateway.errors.Unavailable`.
    """

    channel: str

    def route(self, address: str) -> str | None:
        """The agent answering `address` (ours: a number, a mail address, a webhook path), None if none does."""
        ...

    def agents(self) -> list[str]:
        """The names of the agents a message may address directly (a Slack command's first word)."""
        ...

    def addresses(self, agent: str) -> list[str]:
        """The addresses frontdesk.toml routes to `agent` on this channel (first: the one it writes from)."""
        ...

    async def accept(
        self, message: InboundMessage, *, agent: str | None = None, only_existing: bool = False
    ) -> Accepted:
        """Enqueue `message`, exactly once per `message.id`, for `agent` (default: routed by `message.address`).

        `only_existing` drops it unless its conversation already has a thread; without it,
        an address no agent answers raises UnknownAgent.
        """
        ...

    async def thread_for(self, conversation: str) -> str | None:
        """The thread a conversation of this channel belongs to, if any."""
        ...

    async def thread_status(self, thread_id: str) -> str | None:
        """The thread's status (`gateway.events.STATUSES`); None if it does not exist or is not written yet."""
        ...

    async def bind(self, conversation: str, thread_id: str) -> None:
        """Point a conversation at a thread (a send opened it, a reply token named it)."""
        ...

    async def record_delivery(self, thread_id: str, event: DeliveryEvent, *, dedupe_id: str) -> bool:
        """Append a provider's delivery report to the thread; False if the thread is gone or it was a repeat."""
        ...

    def suggested_prompts(self, agent: str) -> list[str]:
        """The conversation starters frontdesk.toml gives `agent` (`suggested_prompts`, at most 4)."""
        ...


class ChannelState(Protocol):
    """A channel's own Redis keys, all under `<FRONTDESK_KEY_PREFIX>:<namespace>:`.

    Redis being unreachable comes out of every method as `gateway.errors.Unavailable`.
    """

    namespace: str

    def ref(self, name: str) -> str:
        """A stable reference to `name` to keep elsewhere (an attachment's `ref`)."""
        ...

    def name_of(self, ref: str) -> str | None:
        """The name a `ref` of this namespace stands for; None for any other."""
        ...

    async def get(self, name: str) -> str | None: ...

    async def get_bytes(self, name: str) -> bytes | None:
        """The value as stored (raw mail), not decoded as text."""
        ...

    async def set(self, name: str, value: str | bytes, *, ttl: int | None = None, only_new: bool = False) -> bool:
        """Store `value` (for `ttl` seconds); with `only_new`, only if `name` is unset. Whether it was stored."""
        ...

    async def delete(self, name: str) -> bool: ...

    async def exists(self, name: str) -> bool: ...

    async def fields(self, name: str) -> dict[str, str]:
        """Every field of the hash `name`."""
        ...

    async def set_field(self, name: str, field: str, value: str, *, ttl: int) -> None:
        """Set one field of the hash `name`, which then expires `ttl` seconds later."""
        ...


class ChannelContext(Protocol):
    """What a channel factory is given instead of the runtime."""

    settings: Settings
    http: httpx.AsyncClient  # the process's one client; the caller closes it
    # For every URL someone outside supplied (callbacks): pinned to the address it checked
    # (gateway/egress.py); the caller closes it too.
    egress: httpx.AsyncClient

    def inbox(self, channel: str) -> Inbox: ...

    def state(self, namespace: str) -> ChannelState:
        """Keys under `<prefix>:<namespace>:` (by convention the channel's name)."""
        ...


# ---------------------------------------------------------------- what a channel is


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
    # True where a conversation never ends (an SMS number pair): a message after the
    # thread finished starts a new thread instead of waking it.
    fresh_after_done: bool
    # True where a conversation names both ends (an SMS pair, a Slack team/channel/thread):
    # a decision on an approval counts only from a conversation the request was sent on
    # (or one inside it: a Slack DM's root holds the threads of the DM). gateway/router.py.
    decisions_where_asked: bool

    def router(self) -> APIRouter | None:
        """The HTTP routes the provider calls, mounted at their own paths; None for none."""
        ...

    async def send(self, message: OutboundMessage) -> Sent:
        """Deliver one message; the provider's errors leave as DeliveryFailed."""
        ...

    async def complete(self, message: InboundMessage) -> InboundMessage | None:
        """Run by the worker before routing: work kept off the request path (the full MIME parse).

        None drops the message (an auto-reply, a bounce).
        """
        ...

    def addressable(self, message: OutboundMessage) -> bool:
        """False when there is nowhere to send it (a webhook caller gave no callback URL and polls the API)."""
        ...

    def unreachable_reason(self, agent: str, contact: Contact) -> str | None:
        """Why a thread of `agent` launched with `contact` could never reach them (naming the missing
        setting), or None if it can; checked before the thread exists, so a launch gets a 422."""
        ...

    async def aclose(self) -> None:
        """Close what the channel opened itself."""
        ...


@runtime_checkable
class Recovers(Protocol):
    """A channel that can tell whether a send cut off mid-way reached the provider (Slack reads its posts back).

    The outbox asks it before calling a send ambiguous that a stopped sender left unrecorded.
    """

    async def recover(self, message: OutboundMessage) -> Sent | None:
        """What the provider has of `message`: Sent if all of it, None if not all (a send now
        posts only what is missing); DeliveryFailed when it cannot tell."""
        ...


@runtime_checkable
class Listener(Protocol):
    """A channel that also listens on a connection of its own (the SMTP server, Slack Socket Mode)."""

    name: str

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; run by `frontdesk dev` and by the channel's own command."""
        ...


@runtime_checkable
class ShowsProgress(Protocol):
    """A channel that shows a person what their thread is doing while a step runs (Slack's thread status)."""

    def progress(self, update: Progress) -> None:
        """Called by the worker as a step starts (`doing` set) and when it ends (`doing` None).

        Must not block or raise: it is on the worker's path for every step of every thread of
        the channel, so the channel queues its own I/O (and coalesces it).
        """
        ...


class ChannelBase:
    """The defaults of `Channel`: subclass it, set `name`, implement `send` (and `router` for inbound HTTP)."""

    name: str
    resend_safe = False  # unknown outcome: record it, never post twice
    fresh_after_done = False
    decisions_where_asked = False

    def router(self) -> APIRouter | None:
        return None

    async def send(self, message: OutboundMessage) -> Sent:
        raise NotImplementedError(f"{type(self).__name__} does not send")

    async def complete(self, message: InboundMessage) -> InboundMessage | None:
        return message

    def addressable(self, message: OutboundMessage) -> bool:
        return True

    def unreachable_reason(self, agent: str, contact: Contact) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


# ---------------------------------------------------------------- what an agent is


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


@runtime_checkable
class ShowsContext(Protocol):
    """An agent that can show the context it would send its model (the dashboard's context panel)."""

    def render_context(self, thread: Thread) -> str: ...


@runtime_checkable
class SavesEvalCases(Protocol):
    """An agent whose threads can be saved as eval cases (the dashboard's "save as test")."""

    def model_turns(self, thread: Thread) -> list[int]:
        """The indices of the events its model's answers made: the turns a case can be cut at."""
        ...

    def save_eval_case(
        self, thread: Thread, turn: int, *, expect: dict[str, Any] | None = None, note: str | None = None
    ) -> Path:
        """Save `thread` cut at `turn` where the agent keeps its cases; ValueError says why it cannot."""
        ...


@runtime_checkable
class Closes(Protocol):
    """A plugin holding resources of its own (a model client's session), closed when the runtime closes."""

    async def aclose(self) -> None: ...


@runtime_checkable
class Starts(Protocol):
    """A plugin with start-up work of its own (an agent reaching its MCP servers), awaited once the runtime is built."""

    async def start(self) -> None: ...


# ---------------------------------------------------------------- checks at start-up

_NAMESPACE = re.compile(r"^[a-z][a-z0-9_-]*$")
# Free-standing keys the core keeps beside the partitions (gateway.store.keys).
_CORE_NAMESPACES = frozenset({"dashboard", "deliveries", "workers"})


def checked_channel(obj: Any) -> Channel:
    """`obj` if it has every member of `Channel`; else a ConfigError naming what it lacks."""
    if isinstance(obj, Channel):
        return obj
    missing = sorted(m for m in _members(Channel) if not hasattr(obj, m))
    raise ConfigError(
        f"channel {getattr(obj, 'name', type(obj).__name__)!r} lacks {', '.join(missing)}"
        " (subclass gateway.protocols.ChannelBase for the defaults)"
    )


def checked_namespace(namespace: str) -> str:
    """A channel state namespace: a plain lower-case word, so it cannot reach the core's keys (`{p0}`, ...)."""
    if not _NAMESPACE.match(namespace) or namespace in _CORE_NAMESPACES:
        raise ConfigError(
            f"channel state namespace {namespace!r} must be a lower-case word ([a-z][a-z0-9_-]*) the core does not use"
        )
    return namespace


def _members(proto: type) -> set[str]:
    own = {name for name, value in vars(proto).items() if callable(value) and not name.startswith("_")}
    return own | set(proto.__annotations__)
