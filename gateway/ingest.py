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

from typing import cast

import redis.asyncio as aioredis

from gateway import metrics, tracing
from gateway.batch import ScriptBatch
from gateway.entries import Entry
from gateway.events import InboundMessage
from gateway.keys import Keys
from gateway.messages import Accepted
from gateway.scripts import Script
from gateway.streams import Streams

_ACCEPT = """
local prev = redis.call('GET', seen)
if prev then return {0, prev} end
if limit ~= '0' then
  local n = 1
  if not redis.call('SET', rate, 1, 'EX', window, 'NX') then n = redis.call('INCR', rate) end
  if n > tonumber(limit) then return {3, redis.call('TTL', rate)} end
end
local tid = redis.call('GET', conversation)
if not tid then
  if only_existing == '1' then
    redis.call('SET', seen, '', 'EX', ttl)
    return {2, ''}
  end
  tid = candidate
  redis.call('SET', conversation, tid)
end
redis.call('SET', seen, tid, 'EX', ttl)
if traceparent ~= '' then
  redis.call('XADD', inbound, '*', 'k', 'inbound', 't', tid, 'a', agent, 'd', data, 'tp', traceparent)
else
  redis.call('XADD', inbound, '*', 'k', 'inbound', 't', tid, 'a', agent, 'd', data)
end
return {1, tid}
"""


def accept_script() -> Script:
    """{0, thread} a duplicate, {1, thread} appended, {2, ''} ignored (only_existing), {3, ttl} over the rate."""
    return Script(
        _ACCEPT,
        keys=["seen", "conversation", "inbound", "rate"],
        args=["candidate", "ttl", "agent", "data", "only_existing", "traceparent", "limit", "window"],
    )


def rebind_script() -> Script:
    """Move a conversation from a finished thread to a new one, unless someone already did."""
    body = """
local cur = redis.call('GET', conversation)
if cur == old or not cur then
  redis.call('SET', conversation, new)
  return new
end
return cur
"""
    return Script(body, keys=["conversation"], args=["old", "new"])


ACCEPT, REBIND = accept_script(), rebind_script()


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
        self._accept = ScriptBatch(redis, ACCEPT.source)  # concurrent requests share a round trip
        self._rebind = redis.register_script(REBIND.source)

    async def accept(self, message: InboundMessage, agent: str, *, only_existing: bool = False) -> Accepted:
        """Enqueue `message` for `agent`; `only_existing` drops it unless its conversation has a thread."""
        k = self.keys
        p = k.conversation_partition(message.channel, message.conversation)
        candidate = k.new_thread_id(p)
        data = message.model_dump_json(
            exclude_none=True
        )  # the entry's "d": pydantic's JSON, a quarter of json.dumps' cost
        with tracing.span("frontdesk.inbound", channel=message.channel, agent=agent, inbound_id=message.id):
            keys, args = ACCEPT.pack(
                seen=k.seen(p, message.channel, message.id),
                conversation=k.conversation(message.channel, message.conversation),
                inbound=k.inbound(p),
                rate=k.rate(p, message.channel, message.sender),
                candidate=candidate,
                ttl=self.ttl,
                agent=agent,
                data=data,
                only_existing="1" if only_existing else "0",
                traceparent=tracing.traceparent() or "",
                limit=self.rate_limit,
                window=self.rate_window,
            )
            status, thread_id = await self._accept(keys=keys, args=args)
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
        keys, args = REBIND.pack(
            conversation=self.keys.conversation(channel, conversation), old=old_thread, new=self.keys.new_thread_id(p)
        )
        return await self._rebind(keys=keys, args=args)

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
