"""The request path: dedupe, place on a thread, append to the stream. Nothing slow.

One script per inbound message, in the conversation's partition: it drops a
provider retry by its id (a key with a TTL, holding the thread id so the retry is
answered like the original), finds the conversation's thread or claims a new id
for it, and appends the entry. All of it happens at once or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway import metrics
from gateway.entries import Entry
from gateway.events import InboundMessage
from gateway.keys import Keys
from gateway.streams import Streams

_ACCEPT = """
local prev = redis.call('GET', KEYS[1])
if prev then return {0, prev} end
local tid = redis.call('GET', KEYS[2])
if not tid then
  if ARGV[5] == '1' then
    redis.call('SET', KEYS[1], '', 'EX', ARGV[2])
    return {2, ''}
  end
  tid = ARGV[1]
  redis.call('SET', KEYS[2], tid)
end
redis.call('SET', KEYS[1], tid, 'EX', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'k', 'inbound', 't', tid, 'a', ARGV[3], 'd', ARGV[4])
return {1, tid}
"""


# Move a conversation from a finished thread to a new one, unless someone already did.
_REBIND = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or not cur then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return cur
"""


@dataclass(frozen=True)
class Accepted:
    thread_id: str
    duplicate: bool = False
    ignored: bool = False  # only_existing was set and the conversation has no thread


class Ingest:
    """Appends inbound messages to the stream, exactly once per provider id."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, dedupe_ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = dedupe_ttl
        self.streams = Streams(redis, keys)
        self._accept = redis.register_script(_ACCEPT)
        self._rebind = redis.register_script(_REBIND)

    async def accept(self, message: InboundMessage, agent: str, *, only_existing: bool = False) -> Accepted:
        """Enqueue `message` for `agent`; `only_existing` drops it unless its conversation has a thread."""
        k = self.keys
        p = k.conversation_partition(message.channel, message.conversation)
        candidate = k.new_thread_id(p)
        data = Entry(kind="inbound", thread_id=candidate, data=message.model_dump(mode="json", exclude_none=True)).fields()["d"]
        status, thread_id = await self._accept(
            keys=[k.seen(p, message.channel, message.id), k.conversation(message.channel, message.conversation), k.inbound(p)],
            args=[candidate, self.ttl, agent, data, "1" if only_existing else "0"],
        )
        if status == 0:
            metrics.DUPLICATES.labels(message.channel).inc()
            return Accepted(thread_id=thread_id, duplicate=True, ignored=not thread_id)
        if status == 2:
            return Accepted(thread_id="", ignored=True)
        metrics.INBOUND.labels(message.channel).inc()
        return Accepted(thread_id=thread_id)

    async def thread_for(self, channel: str, conversation: str) -> str | None:
        """The thread a conversation belongs to, if any."""
        return await self.redis.get(self.keys.conversation(channel, conversation))

    async def bind(self, channel: str, conversation: str, thread_id: str) -> None:
        """Point a conversation at a thread (an outbound message opened it)."""
        await self.redis.set(self.keys.conversation(channel, conversation), thread_id)

    async def rebind(self, channel: str, conversation: str, old_thread: str) -> str:
        """Give the conversation a new thread if it still points at `old_thread`; the thread it points at now."""
        p = self.keys.conversation_partition(channel, conversation)
        return await self._rebind(keys=[self.keys.conversation(channel, conversation)], args=[old_thread, self.keys.new_thread_id(p)])

    async def enqueue(self, entry: Entry, *, dedupe_id: str | None = None) -> bool:
        """Append an entry to its thread's partition (API resumes, timeouts); False if a duplicate."""
        p = self.keys.thread_partition(entry.thread_id)
        stream = self.keys.inbound(p)
        if dedupe_id is None:
            await self.redis.xadd(stream, entry.fields())
            return True
        marker = self.keys.seen(p, entry.kind, dedupe_id)
        return await self.streams.xadd_once(marker, stream, entry.fields(), self.ttl, entry.thread_id)
