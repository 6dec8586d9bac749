"""The thread store: a hash of metadata and a list of events per thread.

A step appends its new events (RPUSH) and updates a few metadata fields; it never
rewrites the thread, so its cost does not grow with the thread's length. Every
write of a step — events, status indexes, outbox messages, the acknowledgement of
the stream entry it consumed, and the entry that continues the loop — happens in
one script, so a crash leaves either all of it or none.

Only the holder of a thread's lease may save it (the script checks), which makes
the worker that holds the lease the thread's single writer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis
from pydantic import TypeAdapter

from gateway.batch import ScriptBatch
from gateway.entries import Entry
from gateway.events import STATUSES, Contact, EventAdapter, OutboundMessage, Thread, derive_status
from gateway.keys import Keys

GROUP = "workers"

_SAVE = """
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
local tail = 12 + tonumber(ARGV[9]) + tonumber(ARGV[10 + tonumber(ARGV[9])])
if ARGV[tail] ~= '0' then redis.call('PEXPIRE', KEYS[4], ARGV[tail]) end  -- a save extends the lease
-- The entry is consumed already: this is the client re-sending a script whose answer a
-- dropped connection lost. Applying it again would append the step twice.
if ARGV[2] ~= '' and not redis.call('ZSCORE', KEYS[3], ARGV[2]) then return {2, redis.call('ZRANGE', KEYS[3], 0, 0)[1] or ''} end
-- One call per kind of write: each redis.call costs a script about a microsecond of its own,
-- and Redis shares the workers' cores (benchmarks/, scenario 6).
local meta, flat = cjson.decode(ARGV[8]), {}
for k, v in pairs(meta) do flat[#flat + 1] = k; flat[#flat + 1] = v end
redis.call('HSET', KEYS[1], unpack(flat))
local n = tonumber(ARGV[9])
if n > 0 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 10, 9 + n)) end
local m = tonumber(ARGV[10 + n])
for i = 1, m do
  redis.call('XADD', KEYS[6], '*', 'm', ARGV[10 + n + i])
  -- Outbound ids are `<thread>-<event index>`: the senders keep a thread's messages in that order.
  local id = cjson.decode(ARGV[10 + n + i]).id
  redis.call('ZADD', KEYS[18], tonumber(string.match(id, '-(%d+)$')), id)
end
redis.call('ZADD', KEYS[7], ARGV[6], ARGV[5])
-- The status the thread had (the lease holder knows it: it is the only writer); 0: not known
-- (a new thread, or a caller that did not say), then every status index is cleared.
local was, now = tonumber(ARGV[tail + 1]), tonumber(ARGV[7])
if was == 0 then
  for i = 8, 12 do redis.call('ZREM', KEYS[i], ARGV[5]) end
  redis.call('ZADD', KEYS[17], 0, ARGV[5])  -- the id index, which never changes after
elseif was ~= now then
  redis.call('ZREM', KEYS[7 + was], ARGV[5])
end
redis.call('ZADD', KEYS[7 + now], ARGV[6], ARGV[5])
for i = 14, 16 do redis.call('ZADD', KEYS[i], ARGV[6], ARGV[5]) end
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('XACK', KEYS[5], ARGV[4], ARGV[3])
  redis.call('HDEL', KEYS[13], ARGV[3])
end
if ARGV[11 + n + m] == '1' then
  -- 'i': already in the inbox (just below), so the worker draining the thread needs no word of it.
  local id = redis.call('XADD', KEYS[5], '*', 'k', 'continue', 't', ARGV[5], 'i', '1')
  local dash = string.find(id, '-')
  local padded = string.format('%015d-%08d', tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1)))
  redis.call('ZADD', KEYS[3], 0, padded .. '|continue|' .. ARGV[5] .. '||')
end
-- The inbox's head comes back with the answer: the worker's next entry, without a round trip.
return {1, redis.call('ZRANGE', KEYS[3], 0, 0)[1] or ''}
"""

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local meta = cjson.decode(ARGV[1])
for k, v in pairs(meta) do redis.call('HSET', KEYS[1], k, v) end
for i = 4, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
for i = 6, 8 do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3]) end
redis.call('ZADD', KEYS[9], 0, ARGV[3])
redis.call('XADD', KEYS[5], '*', 'k', 'continue', 't', ARGV[3])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Release only when the inbox is empty: an entry added after the holder's last
# look keeps the lease held (and the holder draining) instead of being stranded.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Saved:
    """What a save did: falsy when the lease was lost (nothing written); else the inbox's head after it."""

    ok: bool
    next_entry: str | None = None

    def __bool__(self) -> bool:
        return self.ok


_STATUS_ADAPTER: TypeAdapter[list[str]] = TypeAdapter(list[str])


def _ms(dt) -> int:
    return int(dt.timestamp() * 1000)


def dump_event(event: Any) -> str:
    return event.model_dump_json(exclude_none=True)


class ThreadStore:
    """Load, create, save and list threads; acquire and renew their leases."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._save = redis.register_script(_SAVE)
        self._create = redis.register_script(_CREATE)
        self._renew = ScriptBatch(redis, _RENEW)  # a worker renews the leases it holds together
        self._release = redis.register_script(_RELEASE)
        self._drop = redis.register_script(_DROP)

    # --- reading
    async def load(self, thread_id: str) -> Thread | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.thread(thread_id))
            pipe.lrange(self.keys.events(thread_id), 0, -1)
            meta, raw_events = await pipe.execute()
        if not meta:
            return None
        return thread_from_stored(meta, raw_events)

    async def meta(self, thread_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(self.keys.thread(thread_id)))  # a decoding client

    async def exists(self, thread_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.thread(thread_id)))

    async def list(
        self, *, status: str | None = None, limit: int = 50, before: float | None = None
    ) -> list[dict[str, str]]:
        """Newest first across partitions: the metadata of up to `limit` threads."""
        top = "+inf" if before is None else f"({before}"
        ids: list[tuple[float, str]] = []
        for p in range(self.keys.partitions):
            index = self.keys.status_index(p, status) if status else self.keys.index(p)
            rows = cast(
                list[tuple[str, float]],  # withscores, from a decoding client
                await self.redis.zrevrangebyscore(index, top, "-inf", start=0, num=limit, withscores=True),
            )
            ids.extend((score, tid) for tid, score in rows)
        ids.sort(reverse=True)
        ids = ids[:limit]
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, tid in ids:
                pipe.hgetall(self.keys.thread(tid))
            metas = await pipe.execute()
        return [m for m in metas if m]

    # --- writing
    def _meta(self, thread: Thread, status: str, *, full: bool) -> dict[str, str]:
        meta = {"updated_at": thread.updated_at.isoformat(), "status": status, "events": str(len(thread.events))}
        if full:
            meta.update(
                id=thread.id,
                agent=thread.agent,
                origin=thread.origin.model_dump_json(exclude_none=True),
                channel=thread.origin.channel,
                person=thread.origin.address,
                created_at=thread.created_at.isoformat(),
                responders=json.dumps(thread.responders),
                approvers=json.dumps(thread.approvers),
                version=str(thread.version),
            )
        return meta

    def _facet_keys(self, p: int, thread: Thread) -> Sequence[str]:  # (`list` is a method here)
        """The indexes the dashboard filters and searches by: agent, channel, person, then id."""
        k = self.keys
        return [
            k.facet_index(p, "agent", thread.agent),
            k.facet_index(p, "channel", thread.origin.channel),
            k.facet_index(p, "person", person_key(thread.origin.address)),
            k.id_index(p),
        ]

    async def create(self, thread: Thread) -> bool:
        """Store a new thread and queue the entry that starts its loop (API launch)."""
        p = self.keys.thread_partition(thread.id)
        status = derive_status(thread.events)
        return bool(
            await self._create(
                keys=[
                    self.keys.thread(thread.id),
                    self.keys.events(thread.id),
                    self.keys.index(p),
                    self.keys.status_index(p, status),
                    self.keys.inbound(p),
                    *self._facet_keys(p, thread),
                ],
                args=[
                    json.dumps(self._meta(thread, status, full=True)),
                    _ms(thread.updated_at),
                    thread.id,
                    *[dump_event(e) for e in thread.events],
                ],
            )
        )

    async def save(
        self,
        thread: Thread,
        new_events: Sequence[Any],
        *,
        owner: str,
        entry: Entry | None,
        inbox_member: str = "",
        outbox: Sequence[OutboundMessage] = (),
        created: bool = False,
        keep_running: bool = False,
        lease_ms: int = 0,
        previous_status: str | None = None,
    ) -> Saved:
        """Append `new_events`, queue `outbox`, consume `entry`, extend the lease to `lease_ms`; falsy if the lease was lost.

        `previous_status`: the thread's status before these events, if the caller holds it.
        """
        k, tid = self.keys, thread.id
        p = k.thread_partition(tid)
        status = thread.status
        n, m = len(new_events), len(outbox)
        args: list[Any] = [
            owner,
            inbox_member,
            entry.stream_id if entry and inbox_member else "",
            GROUP,
            tid,
            _ms(thread.updated_at),
            STATUSES.index(status) + 1,
            json.dumps(self._meta(thread, status, full=created)),
            n,
            *[dump_event(e) for e in new_events],
            m,
            *[o.model_dump_json(exclude_none=True) for o in outbox],
            "1" if keep_running else "0",
            lease_ms,  # extend the lease to this, if not 0
            STATUSES.index(previous_status) + 1 if previous_status and not created else 0,
        ]
        keys = [
            k.thread(tid),
            k.events(tid),
            k.inbox(tid),
            k.lease(tid),
            k.inbound(p),
            k.outbox(p),
            k.index(p),
            *[k.status_index(p, s) for s in STATUSES],
            k.attempts(p),
            *self._facet_keys(p, thread),
            k.unsettled(tid),
        ]
        answer = await self._save(keys=keys, args=args)
        if not answer:
            return Saved(False)
        return Saved(True, answer[1] or None)

    # --- leases
    async def acquire(self, thread_id: str, owner: str, ms: int) -> bool:
        return bool(await self.redis.set(self.keys.lease(thread_id), owner, nx=True, px=ms))

    async def renew(self, thread_id: str, owner: str, ms: int) -> bool:
        return bool(await self._renew(keys=[self.keys.lease(thread_id)], args=[owner, ms]))

    async def release(self, thread_id: str, owner: str) -> int:
        """1 released, 0 kept because the inbox is not empty, -1 not ours any more."""
        return int(await self._release(keys=[self.keys.lease(thread_id), self.keys.inbox(thread_id)], args=[owner]))

    async def drop_lease(self, thread_id: str, owner: str) -> None:
        """Give the lease up even with entries waiting (after a failure): a claim retries them."""
        await self._drop(keys=[self.keys.lease(thread_id)], args=[owner])

    async def inbox_head(self, thread_id: str) -> str | None:
        rows = cast(list[str], await self.redis.zrange(self.keys.inbox(thread_id), 0, 0))  # a decoding client
        return rows[0] if rows else None


def thread_from_stored(meta: dict[str, str], raw_events: list[str]) -> Thread:
    """Rebuild a thread from its stored hash and event list (any stored version)."""
    return Thread(
        id=meta["id"],
        agent=meta["agent"],
        origin=Contact.model_validate_json(meta["origin"]),
        events=[EventAdapter.validate_json(e) for e in raw_events],
        created_at=datetime.fromisoformat(meta["created_at"]),
        updated_at=datetime.fromisoformat(meta.get("updated_at", meta["created_at"])),
        responders=_STATUS_ADAPTER.validate_json(meta.get("responders", "[]")),
        approvers=_STATUS_ADAPTER.validate_json(meta.get("approvers", "[]")),
        version=int(meta.get("version", 1)),
    )


def person_key(address: str) -> str:
    """How a person's address is indexed: search is exact but not case-sensitive."""
    return address.strip().lower()


def now_ms() -> int:
    return int(time.time() * 1000)
