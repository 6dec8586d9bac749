"""Stream plumbing shared by the worker and the outbox sender.

Every move of an entry from one place to another is one script, so an entry is
never both in two places nor in neither: forwarding to another partition,
parking it for later (backoff, deadlines), and dead-lettering it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway import metrics
from gateway.loops import Slots
from gateway.store.batch import ScriptBatch
from gateway.store.entries import stream_order
from gateway.store.keys import Keys
from gateway.store.scripts import Group, Script


def xadd_once_script() -> Script:
    """XADD `fields` unless `marker` exists; set it in the same stroke. 1 added, 0 a duplicate."""
    body = """
if redis.call('SET', marker, value, 'NX', 'EX', ttl) then
  redis.call('XADD', stream, '*', unpack(ARGV, fields_at + 1))
  return 1
end
return 0
"""
    return Script(body, keys=["marker", "stream"], args=["ttl", "value", Group("fields")])


def to_inbox_script() -> Script:
    """0: consumed already; 1: in the inbox, and no one holds the thread (kick it); 2: in the inbox of a held thread."""
    # Only an entry still pending enters the inbox: one already applied (acknowledged
    # by the save script) must not come back because a reader saw it late. The holder
    # of a thread takes what is added (2), since it lets go only of an empty inbox.
    body = """
local p = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)
if #p == 0 then return 0 end
redis.call('ZADD', inbox, 'NX', 0, member)
if redis.call('EXISTS', lease) == 1 then return 2 end
return 1
"""
    return Script(body, keys=["stream", "inbox", "lease"], args=["group", "entry_id", "member"])


def park_script() -> Script:
    """Acknowledge an entry and put its copy in a delayed set, due at `due` (ms)."""
    body = """
redis.call('ZADD', delayed, due, copy)
redis.call('XACK', stream, group, entry_id)
return 1
"""
    return Script(body, keys=["stream", "delayed"], args=["group", "entry_id", "due", "copy"])


def release_due_script() -> Script:
    """Move up to `limit` entries due by `now` (ms) from the delayed set onto the stream; how many."""
    body = """
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
for _, copy in ipairs(due) do
  local fields = cjson.decode(copy)
  table.remove(fields, 1)  -- the nonce that keeps equal copies apart
  redis.call('XADD', stream, '*', unpack(fields))
  redis.call('ZREM', delayed, copy)
end
return #due
"""
    return Script(body, keys=["delayed", "stream"], args=["now", "limit"])


def dead_letter_script() -> Script:
    """Append the record to the dead-letter stream, take the entry out of its inbox, acknowledge it."""
    body = """
redis.call('XADD', dlq, '*', unpack(ARGV, record_at + 1))
if member ~= '' then redis.call('ZREM', inbox, member) end
redis.call('XACK', stream, group, entry_id)
redis.call('HDEL', attempts, entry_id)
return 1
"""
    return Script(
        body, keys=["stream", "dlq", "inbox", "attempts"], args=["group", "entry_id", "member", Group("record")]
    )


XADD_ONCE, TO_INBOX, PARK = xadd_once_script(), to_inbox_script(), park_script()
RELEASE_DUE, DEAD_LETTER = release_due_script(), dead_letter_script()


# XRANGE's reply as a client made with decode_responses=True returns it (redis-py's
# annotations say bytes | str, and None, whatever the client decodes).
StreamRows = list[tuple[str, dict[str, str]]]


def missing_group(exc: BaseException) -> bool:
    """Redis's answer to a claim before the reader has created the consumer group: nothing to claim yet."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def flat(fields: dict[str, str]) -> list[str]:
    return [x for pair in fields.items() for x in pair]


def delayed_member(fields: dict[str, str]) -> str:
    """An entry as a member of a delayed set: a random tag (equal entries stay distinct), then its fields."""
    return json.dumps([secrets.token_hex(4), *flat(fields)])


class Streams:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._xadd_once = redis.register_script(XADD_ONCE.source)
        self._to_inbox = ScriptBatch(redis, TO_INBOX.source)  # a reader places a whole batch in one round trip
        self._park = redis.register_script(PARK.source)
        self._release_due = redis.register_script(RELEASE_DUE.source)
        self._dead_letter = redis.register_script(DEAD_LETTER.source)

    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_within(
        self, slots: Slots, stop: asyncio.Event, stream: str, group: str, consumer: str, most: int
    ) -> tuple[list[tuple[str, dict[str, str]]], int]:
        """New entries of `stream`, no more than there are free `slots`: (entries, slots taken for them).

        The caller gives back the slots its entries did not use. An idle stream is waited on
        holding no slot, so a quiet partition keeps none from a busy one; what that wait
        returns (no more than were free when it began) then waits for slots of its own.
        """
        taken = await slots.take(stop, most)
        if not taken:
            return [], 0
        try:
            rows: Any = await self.redis.xreadgroup(group, consumer, {stream: ">"}, count=taken)
        except BaseException:
            slots.give(taken)
            raise
        if rows and rows[0][1]:
            return rows[0][1], taken
        slots.give(taken)
        count = max(1, min(most, slots.size - slots.in_use))
        rows = await self.redis.xreadgroup(group, consumer, {stream: ">"}, count=count, block=500)
        entries = rows[0][1] if rows else []
        # Should the process stop before they have slots, the entries stay pending and are claimed.
        taken = await slots.take_all(stop, len(entries)) if entries else 0
        return (entries, taken) if taken else ([], 0)

    async def trim(self, stream: str, group: str) -> int:
        """Drop entries every consumer is done with: older than the oldest pending and the last delivered."""
        groups = {g["name"]: g for g in await self.redis.xinfo_groups(stream)}
        if group not in groups:
            return 0
        floor = groups[group]["last-delivered-id"]
        pending = await self.redis.xpending(stream, group)
        if pending["pending"]:
            floor = min(floor, pending["min"], key=stream_order)
        return await self.redis.xtrim(stream, minid=floor, approximate=False)

    async def backlog(self, stream: str, group: str) -> tuple[int, int] | None:
        """(lag, pending) of `group`: entries not yet read by any consumer, entries read and not acknowledged."""
        for info in await self.redis.xinfo_groups(stream):
            if info["name"] == group:
                lag = info.get("lag")
                if lag is None:  # Redis < 7 does not report it (nor 7 after an XDEL): count what follows, capped
                    after = f"({info['last-delivered-id']}"
                    lag = len(cast(StreamRows, await self.redis.xrange(stream, after, "+", count=10_000)))
                return int(lag), int(info["pending"])
        return None

    async def record_backlog(self, stream: str, group: str, name: str, p: int) -> None:
        """Set the queue gauges (frontdesk_queue_lag, frontdesk_queue_pending) of one partition's stream."""
        found = await self.backlog(stream, group)
        if found is not None:
            metrics.QUEUE_LAG.labels(name, str(p)).set(found[0])
            metrics.QUEUE_PENDING.labels(name, str(p)).set(found[1])

    async def xadd_once(self, marker: str, stream: str, fields: dict[str, str], ttl: int, value: str = "1") -> bool:
        """XADD unless `marker` exists; set it with the same stroke."""
        keys, args = XADD_ONCE.pack(marker=marker, stream=stream, ttl=ttl, value=value, fields=flat(fields))
        return bool(await self._xadd_once(keys=keys, args=args))

    async def to_inbox(self, stream: str, group: str, entry_id: str, inbox: str, lease: str, member: str) -> bool:
        """Place a pending entry in its thread's inbox; True when the thread needs a kick (no one holds it).

        A holder that gives a thread up with entries left (a failed step, a shutdown) leaves
        them pending, and a claim (`Worker._claim`) brings them back here.
        """
        keys, args = TO_INBOX.pack(
            stream=stream, inbox=inbox, lease=lease, group=group, entry_id=entry_id, member=member
        )
        return await self._to_inbox(keys=keys, args=args) == 1

    async def park(
        self, stream: str, group: str, entry_id: str, delayed: str, due: float, fields: dict[str, str]
    ) -> None:
        """Acknowledge an entry and put a copy aside until `due` (epoch seconds)."""
        keys, args = PARK.pack(
            stream=stream,
            delayed=delayed,
            group=group,
            entry_id=entry_id,
            due=int(due * 1000),
            copy=delayed_member(fields),
        )
        await self._park(keys=keys, args=args)

    async def schedule(self, delayed: str, due: float, fields: dict[str, str]) -> None:
        """Put an entry aside until `due`; it then goes onto the stream the delayed set feeds."""
        member = delayed_member(fields)
        await self.redis.zadd(delayed, {member: int(due * 1000)})

    async def release_due(self, delayed: str, stream: str, limit: int = 100) -> int:
        keys, args = RELEASE_DUE.pack(delayed=delayed, stream=stream, now=int(time.time() * 1000), limit=limit)
        return int(await self._release_due(keys=keys, args=args))

    async def dead_letter(
        self,
        p: int,
        stream: str,
        group: str,
        entry_id: str,
        fields: dict[str, str],
        reason: str,
        *,
        inbox: str = "",
        member: str = "",
    ) -> None:
        record = {
            "source": stream,
            "source_id": entry_id,
            "reason": reason[:2000],
            "failed_at": str(time.time()),
            **fields,
        }
        keys, args = DEAD_LETTER.pack(
            stream=stream,
            dlq=self.keys.dlq(p),
            inbox=inbox or self.keys.attempts(p),  # a key of the same slot when there is no inbox
            attempts=self.keys.attempts(p),
            group=group,
            entry_id=entry_id,
            member=member if inbox else "",
            record=flat(record),
        )
        await self._dead_letter(keys=keys, args=args)

    async def dlq_entries(self, count: int = 100) -> list[tuple[int, str, dict[str, Any]]]:
        out: list[tuple[int, str, dict[str, Any]]] = []
        for p in range(self.keys.partitions):
            for entry_id, fields in cast(StreamRows, await self.redis.xrange(self.keys.dlq(p), count=count)):
                out.append((p, entry_id, fields))
        return out

    async def replay(self, p: int, dlq_id: str) -> bool:
        """Put a dead-lettered entry back on the stream it came from."""
        rows = cast(StreamRows, await self.redis.xrange(self.keys.dlq(p), dlq_id, dlq_id))
        if not rows:
            return False
        fields = dict(rows[0][1])
        source = fields.pop("source")
        for meta in ("source_id", "reason", "failed_at", "i"):  # i: it is in no inbox now
            fields.pop(meta, None)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(source, fields)  # type: ignore[arg-type]  # redis-py types fields as an invariant dict of every encodable type
            pipe.xdel(self.keys.dlq(p), dlq_id)
            await pipe.execute()
        return True
