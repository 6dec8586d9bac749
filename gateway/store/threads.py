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

import builtins
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis
from pydantic import TypeAdapter

from gateway.events import STATUSES, Contact, EventAdapter, OutboundMessage, Thread, derive_status
from gateway.store.batch import ScriptBatch
from gateway.store.entries import Entry
from gateway.store.keys import Keys
from gateway.store.scripts import Group, Script

GROUP = "workers"

# One call per kind of write: each redis.call costs a script about a microsecond of its own,
# and Redis shares the workers' cores (benchmarks/, scenario 6).
_SAVE = """
if redis.call('GET', lease) ~= owner then return 0 end
if lease_ms ~= '0' then redis.call('PEXPIRE', lease, lease_ms) end  -- a save extends the lease
-- The entry is consumed already: this is the client re-sending a script whose answer a
-- dropped connection lost. Applying it again would append the step twice.
if member ~= '' and not redis.call('ZSCORE', inbox, member) then return {2, redis.call('ZRANGE', inbox, 0, 0)[1] or ''} end
local fields, flat = cjson.decode(meta), {}
for k, v in pairs(fields) do flat[#flat + 1] = k; flat[#flat + 1] = v end
redis.call('HSET', thread, unpack(flat))
if new_events_n > 0 then redis.call('RPUSH', events, unpack(ARGV, new_events_at + 1, new_events_at + new_events_n)) end
for i = messages_at + 1, messages_at + messages_n do
  redis.call('XADD', outbox, '*', 'm', ARGV[i])
  -- Outbound ids are `<thread>-<event index>`: the senders keep a thread's messages in that order.
  local id = cjson.decode(ARGV[i]).id
  redis.call('ZADD', unsettled, tonumber(string.match(id, '-(%d+)$')), id)
end
redis.call('ZADD', index, updated, tid)
-- The status the thread had (the lease holder knows it: it is the only writer); 0: not known
-- (a new thread, or a caller that did not say), then every status index is cleared.
was, now = tonumber(was), tonumber(now)
if was == 0 then
  for i = 1, status_n do redis.call('ZREM', KEYS[status_at + i], tid) end
  redis.call('ZADD', id_index, 0, tid)  -- the id index, which never changes after
elseif was ~= now then
  redis.call('ZREM', KEYS[status_at + was], tid)
end
redis.call('ZADD', KEYS[status_at + now], updated, tid)
for i = 1, facets_n do redis.call('ZADD', KEYS[facets_at + i], updated, tid) end
if member ~= '' then
  redis.call('ZREM', inbox, member)
  redis.call('XACK', inbound, group, entry_id)
  redis.call('HDEL', attempts, entry_id)
end
if keep_running == '1' then
  -- 'i': already in the inbox (just below), so the worker draining the thread needs no word of it.
  local id = redis.call('XADD', inbound, '*', 'k', 'continue', 't', tid, 'i', '1')
  local dash = string.find(id, '-')
  local padded = string.format('%015d-%08d', tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1)))
  redis.call('ZADD', inbox, 0, padded .. '|continue|' .. tid .. '||')
end
-- The inbox's head comes back with the answer: the worker's next entry, without a round trip.
return {1, redis.call('ZRANGE', inbox, 0, 0)[1] or ''}
"""

# The indexes the dashboard filters threads by, besides status (gateway/web/dashboard/listing.py).
FACETS = ("agent", "channel", "person")


def save_script(statuses: Sequence[str] = STATUSES, facets: Sequence[str] = FACETS) -> Script:
    """A step's whole write (module docstring); `now` and `was` number a status from 1 in `statuses`."""
    return Script(
        _SAVE,
        keys=[
            "thread",
            "events",
            "inbox",
            "lease",
            "inbound",
            "outbox",
            "index",
            Group("status", len(statuses)),
            "attempts",
            Group("facets", len(facets)),
            "id_index",
            "unsettled",
        ],
        args=[
            "owner",
            "member",  # the inbox member of the entry consumed; '' for none
            "entry_id",
            "group",
            "tid",
            "updated",  # ms
            "now",
            "meta",  # JSON of the fields to set
            "keep_running",  # '1': queue the entry that continues the loop
            "lease_ms",  # extend the lease to this, if not 0
            "was",
            Group("new_events"),
            Group("messages"),
        ],
    )


_CREATE = """
if redis.call('EXISTS', thread) == 1 then return 0 end
local fields = cjson.decode(meta)
for k, v in pairs(fields) do redis.call('HSET', thread, k, v) end
for i = new_events_at + 1, new_events_at + new_events_n do redis.call('RPUSH', events, ARGV[i]) end
redis.call('ZADD', index, updated, tid)
redis.call('ZADD', status, updated, tid)
for i = 1, facets_n do redis.call('ZADD', KEYS[facets_at + i], updated, tid) end
redis.call('ZADD', id_index, 0, tid)
redis.call('XADD', inbound, '*', 'k', 'continue', 't', tid)
return 1
"""


def create_script(facets: Sequence[str] = FACETS) -> Script:
    """A new thread, indexed, with the entry that starts its loop; 0 if the id is taken."""
    return Script(
        _CREATE,
        keys=["thread", "events", "index", "status", "inbound", Group("facets", len(facets)), "id_index"],
        args=["meta", "updated", "tid", Group("new_events")],
    )


def renew_script() -> Script:
    """Extend the lease, if it is still `owner`'s."""
    body = """
if redis.call('GET', lease) == owner then return redis.call('PEXPIRE', lease, ms) end
return 0
"""
    return Script(body, keys=["lease"], args=["owner", "ms"])


def release_script() -> Script:
    """1 released, 0 kept (the inbox is not empty), -1 not `owner`'s."""
    # Release only when the inbox is empty: an entry added after the holder's last
    # look keeps the lease held (and the holder draining) instead of being stranded.
    body = """
if redis.call('GET', lease) ~= owner then return -1 end
if redis.call('ZCARD', inbox) > 0 then return 0 end
redis.call('DEL', lease)
return 1
"""
    return Script(body, keys=["lease", "inbox"], args=["owner"])


def drop_script() -> Script:
    """Delete the lease, if it is still `owner`'s, whatever waits in the inbox."""
    body = """
if redis.call('GET', lease) == owner then return redis.call('DEL', lease) end
return 0
"""
    return Script(body, keys=["lease"], args=["owner"])


SAVE, CREATE = save_script(), create_script()
RENEW, RELEASE, DROP = renew_script(), release_script(), drop_script()


@dataclass(frozen=True)
class Saved:
    """What a save did: falsy when the lease was lost (nothing written); else the inbox's head after it."""

    ok: bool
    next_entry: str | None = None

    def __bool__(self) -> bool:
        return self.ok


_STATUS_ADAPTER: TypeAdapter[list[str]] = TypeAdapter(list[str])

# A thread's event list only grows: the save and create scripts RPUSH to it, nothing rewrites,
# trims or deletes it, and a thread id is never reused. So the events a store last read or
# wrote for a thread are a prefix of what is stored (the hash's `events` count, written in the
# same script, confirms it), and a load reads only the rest, handing back the very event
# objects it held, whose context blocks the renderer kept (agents/kit/context.py). A worker
# that took a 1,000-event thread up again read, parsed and rendered all of it: 12.6 ms of CPU
# a step against 0.8 ms at 10 events (benchmarks/, scenario 9a). Bounded in events, not
# threads: a few long threads must not hold a worker's memory.
KNOWN_EVENTS = 100_000


def _ms(dt) -> int:
    return int(dt.timestamp() * 1000)


def dump_event(event: Any) -> str:
    return event.model_dump_json(exclude_none=True)


class ThreadStore:
    """Load, create, save and list threads; acquire and renew their leases."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._save = redis.register_script(SAVE.source)
        self._create = redis.register_script(CREATE.source)
        self._renew = ScriptBatch(redis, RENEW.source)  # a worker renews the leases it holds together
        self._release = redis.register_script(RELEASE.source)
        self._drop = redis.register_script(DROP.source)
        # The events last read or written here and the stored text of the last one, per thread,
        # least recently used first (`KNOWN_EVENTS`).
        self._known: dict[str, tuple[builtins.list[Any], str]] = {}
        self._known_events = 0

    # --- reading
    async def load(self, thread_id: str) -> Thread | None:
        known, last = self._known.get(thread_id, ([], ""))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.thread(thread_id))
            pipe.lrange(self.keys.events(thread_id), max(len(known) - 1, 0), -1)  # from the last one known
            meta, raw_events = await pipe.execute()
        if not meta:
            self._forget(thread_id)
            return None
        if known:
            if raw_events[:1] == [last] and meta.get("events") == str(len(known) + len(raw_events) - 1):
                raw_events = raw_events[1:]
            else:  # a save landed between the two reads, or Redis lost writes: read it all
                known, raw_events = [], await self.redis.lrange(self.keys.events(thread_id), 0, -1)
        thread = thread_from_stored(meta, raw_events, known)
        if raw_events:
            self._remember(thread, raw_events[-1])
        elif known:
            self._remember(thread, last)
        return thread

    def _remember(self, thread: Thread, last: str) -> None:
        """Keep the thread's events, `last` as the stored text of the last one."""
        self._forget(thread.id)  # and back in as the most recent
        self._known[thread.id] = (list(thread.events), last)
        self._known_events += len(thread.events)
        while self._known_events > KNOWN_EVENTS and len(self._known) > 1:
            self._forget(next(iter(self._known)))

    def _forget(self, thread_id: str) -> None:
        events, _ = self._known.pop(thread_id, ((), ""))
        self._known_events -= len(events)

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

    def _facet_keys(self, p: int, thread: Thread) -> builtins.list[str]:  # `list` is a method here
        """The indexes the dashboard filters and searches by, one per FACETS."""
        value = {"agent": thread.agent, "channel": thread.origin.channel, "person": person_key(thread.origin.address)}
        return [self.keys.facet_index(p, facet, value[facet]) for facet in FACETS]

    async def create(self, thread: Thread) -> bool:
        """Store a new thread and queue the entry that starts its loop (API launch)."""
        k, p = self.keys, self.keys.thread_partition(thread.id)
        status = derive_status(thread.events)
        keys, args = CREATE.pack(
            thread=k.thread(thread.id),
            events=k.events(thread.id),
            index=k.index(p),
            status=k.status_index(p, status),
            inbound=k.inbound(p),
            facets=self._facet_keys(p, thread),
            id_index=k.id_index(p),
            meta=json.dumps(self._meta(thread, status, full=True)),
            updated=_ms(thread.updated_at),
            tid=thread.id,
            new_events=[dump_event(e) for e in thread.events],
        )
        return bool(await self._create(keys=keys, args=args))

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
        keys, args = SAVE.pack(
            thread=k.thread(tid),
            events=k.events(tid),
            inbox=k.inbox(tid),
            lease=k.lease(tid),
            inbound=k.inbound(p),
            outbox=k.outbox(p),
            index=k.index(p),
            status=[k.status_index(p, s) for s in STATUSES],
            attempts=k.attempts(p),
            facets=self._facet_keys(p, thread),
            id_index=k.id_index(p),
            unsettled=k.unsettled(tid),
            owner=owner,
            member=inbox_member,
            entry_id=entry.stream_id if entry and inbox_member else "",
            group=GROUP,
            tid=tid,
            updated=_ms(thread.updated_at),
            now=STATUSES.index(status) + 1,
            meta=json.dumps(self._meta(thread, status, full=created)),
            keep_running="1" if keep_running else "0",
            lease_ms=lease_ms,
            was=STATUSES.index(previous_status) + 1 if previous_status and not created else 0,
            new_events=(dumped := [dump_event(e) for e in new_events]),
            messages=[o.model_dump_json(exclude_none=True) for o in outbox],
        )
        answer = await self._save(keys=keys, args=args)
        applied = bool(answer) and answer[0] == 1
        if applied and dumped:
            self._remember(thread, dumped[-1])
        elif not applied:  # the lease lost, or (2) applied before by a send whose answer was lost
            self._forget(tid)  # the next load reads it all
        if not answer:
            return Saved(False)
        return Saved(True, answer[1] or None)

    # --- leases
    async def acquire(self, thread_id: str, owner: str, ms: int) -> bool:
        return bool(await self.redis.set(self.keys.lease(thread_id), owner, nx=True, px=ms))

    async def renew(self, thread_id: str, owner: str, ms: int) -> bool:
        keys, args = RENEW.pack(lease=self.keys.lease(thread_id), owner=owner, ms=ms)
        return bool(await self._renew(keys=keys, args=args))

    async def release(self, thread_id: str, owner: str) -> int:
        """1 released, 0 kept because the inbox is not empty, -1 not ours any more."""
        keys, args = RELEASE.pack(lease=self.keys.lease(thread_id), inbox=self.keys.inbox(thread_id), owner=owner)
        return int(await self._release(keys=keys, args=args))

    async def drop_lease(self, thread_id: str, owner: str) -> None:
        """Give the lease up even with entries waiting (after a failure): a claim retries them."""
        keys, args = DROP.pack(lease=self.keys.lease(thread_id), owner=owner)
        await self._drop(keys=keys, args=args)

    async def inbox_head(self, thread_id: str) -> str | None:
        rows = cast(list[str], await self.redis.zrange(self.keys.inbox(thread_id), 0, 0))  # a decoding client
        return rows[0] if rows else None


def thread_from_stored(meta: dict[str, str], raw_events: list[str], known: Sequence[Any] = ()) -> Thread:
    """Rebuild a thread from its stored hash and event list (any stored version), after the events `known`."""
    return Thread(
        id=meta["id"],
        agent=meta["agent"],
        origin=Contact.model_validate_json(meta["origin"]),
        events=[*known, *(EventAdapter.validate_json(e) for e in raw_events)],
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
