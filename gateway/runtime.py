"""The runtime: every resource a process holds, opened and closed in one place.

The HTTP lifespan, `frontdesk worker` and `frontdesk dev` all enter `running()`,
which closes what it opened in reverse order, even on error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import redis.asyncio as aioredis

from gateway import egress, tracing
from gateway.channel_context import RuntimeChannelContext
from gateway.config import FrontdeskConfig, load_config
from gateway.errors import ConfigError
from gateway.links import Linker
from gateway.protocols import Agent, Channel, ChannelContext, Closes, Starts, Unconfigured, checked_channel
from gateway.registry import BUILTIN_AGENTS, BUILTIN_CHANNELS, instantiate, load_plugins
from gateway.router import Router
from gateway.settings import Settings
from gateway.store.connection import connect_redis
from gateway.store.ingest import Ingest
from gateway.store.keys import Keys
from gateway.store.streams import Streams
from gateway.store.threads import ThreadStore

_Made = TypeVar("_Made")


class SharedClients:
    """Clients that plugins share, one per key, built on first use and closed with the runtime.

    Agents key their model clients by spec: every agent on `openai:gpt-4o-mini` uses
    one client and its connection pool, not one each (agents/kit/agent.py).
    """

    def __init__(self) -> None:
        self._made: dict[Hashable, Any] = {}

    def get(self, key: Hashable, build: Callable[[], _Made]) -> _Made:
        """The client under `key`; `build()` makes it the first time."""
        if key not in self._made:
            self._made[key] = build()
        return self._made[key]

    async def aclose(self) -> None:
        """Close every client that closes (`Closes`), the last made first, all of them even if one fails."""
        made, self._made = list(self._made.values()), {}
        async with contextlib.AsyncExitStack() as stack:
            for client in made:
                if isinstance(client, Closes):
                    stack.push_async_callback(client.aclose)


@dataclass
class Runtime:
    settings: Settings
    config: FrontdeskConfig
    redis: aioredis.Redis
    http: httpx.AsyncClient
    # For URLs a caller supplied (callbacks): connects only to the address it checked (gateway/egress.py).
    egress: httpx.AsyncClient
    keys: Keys
    store: ThreadStore
    streams: Streams
    ingest: Ingest
    agents: dict[str, Agent] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    # The channels that are off, and the setting each lacks (a launch naming one is refused with it).
    unconfigured: dict[str, str] = field(default_factory=dict)
    router: Router = field(init=False)  # built once the agents are loaded: it routes to them
    links: Linker | None = None  # signs and checks approval links (gateway.links); set by running()
    # What channels are given instead of this runtime (gateway.protocols.ChannelContext).
    channel_context: ChannelContext | None = None
    # What plugins of this process share, by name (the agent kit's MCP sessions: agents/kit/mcp.py);
    # each is closed with the runtime, after the agents that use it.
    shared: dict[str, Closes] = field(default_factory=dict)
    clients: SharedClients = field(default_factory=SharedClients)

    def agent_names(self) -> list[str]:
        return sorted(self.agents)


def consumer_name() -> str:
    """A name unique to this process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    redis_url: str | None = None,
    agents: Sequence[Any] = (),
    channels: Sequence[Any] = (),
    builtins: bool = True,
) -> AsyncIterator[Runtime]:
    """Open Redis, the HTTP client, the agents and channels; yield them; close them all.

    `agents`/`channels` add objects (or factories) to those found from the settings;
    `builtins=False` leaves out the sample agents and the built-in channels.
    """
    config = load_config(settings.config_path)
    keys = Keys(settings.key_prefix, settings.partitions)
    async with contextlib.AsyncExitStack() as stack:
        if tracing.configure(settings):
            stack.callback(tracing.flush)  # last out: spans of the shutdown included
        redis = await stack.enter_async_context(connect_redis(settings, redis_url))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10, follow_redirects=False))
        callbacks = await stack.enter_async_context(egress.client(settings))
        rt = Runtime(
            settings=settings,
            config=config,
            redis=redis,
            http=http,
            egress=callbacks,
            keys=keys,
            store=ThreadStore(redis, keys),
            streams=Streams(redis, keys),
            ingest=Ingest(redis, keys, settings.dedupe_ttl, settings.rate_limit, settings.rate_window),
        )
        stack.push_async_callback(_close_shared, rt)
        stack.push_async_callback(rt.clients.aclose)  # after the agents and channels that use them
        agent_paths = ([BUILTIN_AGENTS] if builtins else []) + settings.agent_modules()
        for agent in [*load_plugins(agent_paths, rt), *instantiate(list(agents), rt)]:
            rt.agents[agent.name] = agent
        _check_config(config, rt.agents)
        rt.links = Linker(settings, redis, keys)
        rt.router = Router(config, set(rt.agents), settings.default_agent, settings.email_domain, rt.links)
        rt.channel_context = context = RuntimeChannelContext(rt)
        channel_paths = ([BUILTIN_CHANNELS] if builtins else []) + settings.channel_modules()
        for found in [*load_plugins(channel_paths, context), *instantiate(list(channels), context)]:
            if isinstance(found, Unconfigured):
                rt.unconfigured[found.name] = found.reason
                continue
            channel = checked_channel(found)
            rt.channels[channel.name] = channel
        rt.router.decisions_where_asked = {n for n, c in rt.channels.items() if c.decisions_where_asked}
        for agent in rt.agents.values():
            if isinstance(agent, Closes):
                stack.push_async_callback(agent.aclose)
        for channel in rt.channels.values():
            stack.push_async_callback(channel.aclose)
        await asyncio.gather(*(agent.start() for agent in rt.agents.values() if isinstance(agent, Starts)))
        yield rt


async def _close_shared(rt: Runtime) -> None:
    for name in reversed(list(rt.shared)):
        await rt.shared.pop(name).aclose()


def tune_gc(*, latency: bool = True) -> None:
    """Collect less often, and never walk what start-up built (it lives as long as the process).

    Called by a process once its runtime and roles are up (`frontdesk` roles, the HTTP lifespan).

    With CPython's default (a collection every 700 allocations) and the heap of a loaded
    app, the collector took about a third of a webhook's CPU, and its full collections
    held requests for tens of ms: p99 80-110 ms against 15-20 ms after (benchmarks/, scenario 1).
    A process that answers no client (`latency=False`: workers, senders) waits five times longer
    between young collections: a worker keeps a thousand threads' events alive, each collection
    walks the survivors, and fewer, longer pauses cost it less than half the collector's time
    (0.8 -> 0.3 s over a 15 s run of scenario 4); no caller waits on any one pause. A process
    with clients waiting (HTTP, and the listeners: SMTP) keeps 10,000: at 50,000 `frontdesk smtp`
    paused once per ~1,000 messages for 120-135 ms, every client waiting, against 10-30 ms
    pauses at 10,000 (scenario 2, a busy machine; benchmarks/NOTES.md, "SMTP tail").
    """
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 10_000 if latency else 50_000), gen1, gen2)


def _check_config(config: FrontdeskConfig, agents: dict[str, Any]) -> None:
    for name in config.agents:
        if name not in agents:
            raise ConfigError(
                f"frontdesk.toml: agents.{name}: no agent named {name!r} (known: {', '.join(sorted(agents))})"
            )
    for i, cron in enumerate(config.cron):
        if cron.agent not in agents:
            raise ConfigError(f"frontdesk.toml: cron.{i}.agent: no agent named {cron.agent!r}")
