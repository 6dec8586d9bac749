"""The core's side of `ChannelContext`: a channel's inbox and its own keys, over the runtime.

Each method is one or two Redis calls the channel used to make itself. The runtime's
client raises `Unavailable` for an outage (gateway/store/connection.py), so a channel
catches only the error tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import httpx
import redis.asyncio as aioredis
from redis.client import NEVER_DECODE

from gateway.errors import UnknownAgent
from gateway.messages import Accepted, DeliveryEvent, InboundMessage
from gateway.protocols import checked_namespace
from gateway.settings import Settings
from gateway.store.entries import Entry
from gateway.store.keys import Keys

if TYPE_CHECKING:
    from gateway.runtime import Runtime


class RuntimeInbox:
    """`gateway.protocols.Inbox` for one channel."""

    def __init__(self, rt: Runtime, channel: str) -> None:
        self.rt = rt
        self.channel = channel

    def route(self, address: str) -> str | None:
        assert self.rt.router is not None  # built before any channel
        return self.rt.router.route(self.channel, address)

    def agents(self) -> list[str]:
        return sorted(self.rt.agents)

    def addresses(self, agent: str) -> list[str]:
        routed = dict(self.rt.config.agent(agent).routes).get(self.channel)
        return list(routed) if isinstance(routed, list) else []

    async def accept(
        self, message: InboundMessage, *, agent: str | None = None, only_existing: bool = False
    ) -> Accepted:
        if message.channel != self.channel:
            raise ValueError(f"the {self.channel} inbox got a {message.channel} message")
        if agent is None:
            agent = self.route(message.address)
            if agent is None and not only_existing:
                raise UnknownAgent(f"no agent answers {self.channel} messages to {message.address!r}")
        return await self.rt.ingest.accept(message, agent or "", only_existing=only_existing)

    async def thread_for(self, conversation: str) -> str | None:
        return await self.rt.ingest.thread_for(self.channel, conversation)

    async def thread_status(self, thread_id: str) -> str | None:
        return (await self.rt.store.meta(thread_id)).get("status")

    async def bind(self, conversation: str, thread_id: str) -> None:
        await self.rt.ingest.bind(self.channel, conversation, thread_id)

    async def record_delivery(self, thread_id: str, event: DeliveryEvent, *, dedupe_id: str) -> bool:
        entry = Entry(kind="delivery", thread_id=thread_id, data=event.model_dump(mode="json", exclude_none=True))
        if not await self.rt.store.exists(thread_id):
            return False
        return await self.rt.ingest.enqueue(entry, dedupe_id=dedupe_id)

    def suggested_prompts(self, agent: str) -> list[str]:
        return list(self.rt.config.agent(agent).suggested_prompts)


class RedisState:
    """`gateway.protocols.ChannelState`: keys `<prefix>:<namespace>:<name>`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, namespace: str) -> None:
        self.redis = redis
        self.namespace = checked_namespace(namespace)
        self._prefix = keys.key(namespace, "")

    def ref(self, name: str) -> str:
        return self._prefix + name

    def name_of(self, ref: str) -> str | None:
        return ref[len(self._prefix) :] if ref.startswith(self._prefix) else None

    async def get(self, name: str) -> str | None:
        return cast(str | None, await self.redis.get(self.ref(name)))  # the client decodes replies

    async def get_bytes(self, name: str) -> bytes | None:
        # The client decodes replies as UTF-8; NEVER_DECODE is the option redis-py's own DUMP uses.
        return await self.redis.execute_command("GET", self.ref(name), **{NEVER_DECODE: True})

    async def set(self, name: str, value: str | bytes, *, ttl: int | None = None, only_new: bool = False) -> bool:
        return bool(await self.redis.set(self.ref(name), value, ex=ttl, nx=only_new))

    async def delete(self, name: str) -> bool:
        return bool(await self.redis.delete(self.ref(name)))

    async def exists(self, name: str) -> bool:
        return bool(await self.redis.exists(self.ref(name)))

    async def fields(self, name: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(self.ref(name)))

    async def set_field(self, name: str, field: str, value: str, *, ttl: int) -> None:
        key = self.ref(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, field, value)
            pipe.expire(key, ttl)
            await pipe.execute()


class RuntimeChannelContext:
    """`gateway.protocols.ChannelContext` over a runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings: Settings = rt.settings
        self.http: httpx.AsyncClient = rt.http
        self.egress: httpx.AsyncClient = rt.egress

    def inbox(self, channel: str) -> RuntimeInbox:
        return RuntimeInbox(self.rt, channel)

    def state(self, namespace: str) -> RedisState:
        return RedisState(self.rt.redis, self.rt.keys, namespace)
