"""The request path: dedupe, place on a thread, append to the stream. Nothing slow.

One script per inbound message, in the conversation's partition: it drops a
provider retry by its id (a key with a TTL, holding the thread id so the retry is
answered like the original), finds the conversation's thread or claims a new id
for it, and appends the entry. All of it happens at once or not at all.

The same script counts the sender's messages in a fixed window (a key in the
conversation's partition, so it stays one round trip on one slot); a sender over
FRONTDESK_RATE_LIMIT gets `limited` back and nothing is appended. A provider
retry of an accepted message is answered before it is counted. A sender's first
message in a window opens it with one SET NX EX rather than INCR and EXPIRE: one
write fewer for Redis to run and append to its AOF (benchmarks/, scenario 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from gateway import metrics, tracing
from gateway.batch import ScriptBatch
from gateway.entries import Entry
from gateway.events import InboundMessage
from gateway.keys import Keys
from gateway.streams import Streams

_ACCEPT = """
local prev = redis.call('GET', KEYS[1])
if prev then return {0, prev} end
if ARGV[7] ~= '0' then
  local n = 1
  if not redis.call('SET', KEYS[4], 1, 'EX', ARGV[8], 'NX') then n = redis.call('INCR', KEYS[4]) end
  if n > tonumber(ARGV[7]) then return {3, redis.call('TTL', KEYS[4])} end
end
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
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'k', 'inbound', 't', tid, 'a', ARGV[3], 'd', ARGV[4], 'tp', ARGV[6])
else
  redis.call('XADD', KEYS[3], '*', 'k', 'inbound', 't', tid, 'a', ARGV[3], 'd', ARGV[4])
end
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
    limited: bool = False  # the sender is over its rate; nothing was enqueued
    retry_after: int = 0  # with `limited`: seconds until the sender's window ends


class Ingest:
    """Appends inbound messages to the stream, exactly once per provider id."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, dedupe_ttl: int, rate_limit: int = 0, rate_window: int = 60
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = dedupe_ttl
        self.rate_limit = rate_limit  # messages per sender per window; 0: none
        self.rate_window = rate_window
        self.streams = Streams(redis, keys)
        self._accept = ScriptBatch(redis, _ACCEPT)  # concurrent requests share a round trip
        self._rebind = redis.register_script(_REBIND)

    async def accept(self, message: InboundMessage, agent: str, *, only_existing: bool = False) -> Accepted:
        """Enqueue `message` for `agent`; `only_existing` drops it unless its conversation has a thread."""
        k = self.keys
        p = k.conversation_partition(message.channel, message.conversation)
        candidate = k.new_thread_id(p)
        data = message.model_dump_json(
            exclude_none=True
        )  # the entry's "d": pydantic's JSON, a quarter of json.dumps' cost
        with tracing.span("frontdesk.inbound", channel=message.channel, agent=agent, inbound_id=message.id):
            status, thread_id = await self._accept(
                keys=[
                    k.seen(p, message.channel, message.id),
                    k.conversation(message.channel, message.conversation),
                    k.inbound(p),
                    k.rate(p, message.channel, message.sender),
                ],
                args=[
                    candidate,
                    self.ttl,
                    agent,
                    data,
                    "1" if only_existing else "0",
                    tracing.traceparent() or "",
                    self.rate_limit,
                    self.rate_window,
                ],
            )
        if status == 0:
            metrics.DUPLICATES.labels(message.channel).inc()
            return Accepted(thread_id=thread_id, duplicate=True, ignored=not thread_id)
        if status == 2:
            return Accepted(thread_id="", ignored=True)
        if status == 3:
            metrics.REJECTED.labels(message.channel, "rate_limited").inc()
            return Accepted(thread_id="", limited=True, retry_after=max(1, int(thread_id)))
        metrics.INBOUND.labels(message.channel).inc()
        return Accepted(thread_id=thread_id)

    async def thread_for(self, channel: str, conversation: str) -> str | None:
        """The thread a conversation belongs to, if any."""
        return cast(str | None, await self.redis.get(self.keys.conversation(channel, conversation)))  # decoding client

    async def bind(self, channel: str, conversation: str, thread_id: str) -> None:
        """Point a conversation at a thread (an outbound message opened it)."""
        await self.redis.set(self.keys.conversation(channel, conversation), thread_id)

    async def rebind(self, channel: str, conversation: str, old_thread: str) -> str:
        """Give the conversation a new thread if it still points at `old_thread`; the thread it points at now."""
        p = self.keys.conversation_partition(channel, conversation)
        return await self._rebind(
            keys=[self.keys.conversation(channel, conversation)], args=[old_thread, self.keys.new_thread_id(p)]
        )

    async def enqueue(self, entry: Entry, *, dedupe_id: str | None = None) -> bool:
        """Append an entry to its thread's partition (API resumes, timeouts); False if a duplicate."""
        p = self.keys.thread_partition(entry.thread_id)
        stream = self.keys.inbound(p)
        fields = entry.fields()
        if tp := tracing.traceparent():  # an API resume continues the caller's trace
            fields["tp"] = tp
        if dedupe_id is None:
            await self.redis.xadd(stream, fields)  # type: ignore[arg-type]  # redis-py types fields as an invariant dict of every encodable type
            return True
        marker = self.keys.seen(p, entry.kind, dedupe_id)
        return await self.streams.xadd_once(marker, stream, fields, self.ttl, entry.thread_id)
