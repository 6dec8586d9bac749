"""The request path: dedupe, place on a thread, append to the stream. Nothing slow.

One script per inbound message, in the conversation's partition: it drops a
provider retry by its id (a key with a TTL, holding the thread id so the retry is
answered like the original), finds the conversation's thread or claims a new id
for it, and appends the entry. All of it happens at once or not at all.

Rate limits are per (channel, sender), whatever conversation or partition the
message falls in, over a sliding window: the sender's key is a sorted set of the
ids of the messages taken in the last FRONTDESK_RATE_WINDOW seconds (scored by
Redis's own clock, so every gateway counts on one), at most FRONTDESK_RATE_LIMIT
of them. A sender over it gets `limited` back, with the seconds until its oldest
message leaves the window, and nothing is appended. A provider retry of an
accepted message is answered before it is counted, and an id already in the
window is never counted twice.

On one Redis server the count runs inside the accept script: one round trip,
atomic with the dedupe. A Redis Cluster refuses a script whose keys lie on two
slots, and a sender's key cannot share a slot with every partition its messages
fall in, so there the count is a script of its own on the sender's slot, run
just before the accept script: two round trips. Counting by message id keeps that
pair safe to repeat (a request cut off between the two is retried by its
provider with the same id, which is not counted again); what it loses is the
order "dedupe, then count": a retry that arrives after its window has passed
meets the count before the dedupe, so over the limit it is answered `limited`
rather than as a duplicate (its provider tries again later, and then it is).
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway import metrics, tracing
from gateway.events import InboundMessage
from gateway.messages import Accepted
from gateway.store.batch import ScriptBatch
from gateway.store.entries import Entry
from gateway.store.keys import Keys
from gateway.store.scripts import Script
from gateway.store.streams import Streams

# over_rate(): nil when `member` may pass (now counted, or counted already), else the
# seconds until the oldest message in the window leaves it. Needs `rate`, `member`,
# `limit` and `window` bound; a limit of '0' is off.
_RATE = """
local function over_rate()
  if limit == '0' then return nil end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local span = tonumber(window) * 1000
  redis.call('ZREMRANGEBYSCORE', rate, '-inf', now - span)
  if redis.call('ZSCORE', rate, member) then return nil end
  if redis.call('ZCARD', rate) >= tonumber(limit) then
    local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
    return math.max(1, math.ceil((tonumber(oldest[2]) + span - now) / 1000))
  end
  redis.call('ZADD', rate, now, member)
  redis.call('PEXPIRE', rate, span)
  return nil
end
"""

_DEDUPE = """
local prev = redis.call('GET', seen)
if prev then return {0, prev} end
"""

_COUNT = """
local wait = over_rate()
if wait then return {3, wait} end
"""

_APPEND = """
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

_ACCEPT_ARGS = ["candidate", "ttl", "agent", "data", "only_existing", "traceparent"]


def accept_script() -> Script:
    """Dedupe, count, append, on one server: {0, thread} a duplicate, {1, thread} appended,
    {2, ''} ignored (only_existing), {3, seconds} over the rate."""
    return Script(
        _RATE + _DEDUPE + _COUNT + _APPEND,
        keys=["seen", "conversation", "inbound", "rate"],
        args=[*_ACCEPT_ARGS, "member", "limit", "window"],
    )


def append_script() -> Script:
    """Dedupe and append, on the conversation's slot (a Cluster: `rate_script` counted first)."""
    return Script(_DEDUPE + _APPEND, keys=["seen", "conversation", "inbound"], args=_ACCEPT_ARGS)


def rate_script() -> Script:
    """Count `member` for its sender, on the sender's slot: {1, ''} it may pass, {3, seconds} over the rate."""
    return Script(_RATE + _COUNT + "return {1, ''}\n", keys=["rate"], args=["member", "limit", "window"])


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


ACCEPT, APPEND, RATE, REBIND = accept_script(), append_script(), rate_script(), rebind_script()


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
        # A Cluster cannot run one script over the sender's slot and the partition's (module docstring).
        self.split = isinstance(redis, RedisCluster)
        self._accept = ScriptBatch(redis, ACCEPT.source)  # concurrent requests share a round trip
        self._append = ScriptBatch(redis, APPEND.source)
        self._rate = ScriptBatch(redis, RATE.source)
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
            common = dict(
                seen=k.seen(p, message.channel, message.id),
                conversation=k.conversation(message.channel, message.conversation),
                inbound=k.inbound(p),
                candidate=candidate,
                ttl=self.ttl,
                agent=agent,
                data=data,
                only_existing="1" if only_existing else "0",
                traceparent=tracing.traceparent() or "",
            )
            rate = dict(
                rate=k.rate(message.channel, message.sender),
                member=message.id,
                limit=self.rate_limit,
                window=self.rate_window,
            )
            if not self.split:
                keys, args = ACCEPT.pack(**common, **rate)
                status, thread_id = await self._accept(keys=keys, args=args)
            else:
                status, thread_id = 1, ""
                if self.rate_limit:
                    keys, args = RATE.pack(**rate)
                    status, thread_id = await self._rate(keys=keys, args=args)
                if status != 3:
                    keys, args = APPEND.pack(**common)
                    status, thread_id = await self._append(keys=keys, args=args)
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
