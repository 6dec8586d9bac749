"""Stream plumbing shared by the worker and the outbox sender.

Every move of an entry from one place to another is one script, so an entry is
never both in two places nor in neither: forwarding to another partition,
parking it for later (backoff, deadlines), and dead-lettering it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway import metrics
from gateway.batch import ScriptBatch
from gateway.keys import Keys

_XADD_ONCE = """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
  return 1
end
return 0
"""

# Only an entry still pending enters the inbox: one already applied (acknowledged
# by the save script) must not come back because a reader saw it late.
# 0: consumed already; 1: in the inbox, and no one holds the thread (kick it); 2: in the inbox
# of a thread someone holds — the holder takes it, since it lets go only of an empty inbox.
_TO_INBOX = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
return 1
"""

_PARK = """
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

_RELEASE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local fields = cjson.decode(member)
  table.remove(fields, 1)
  redis.call('XADD', KEYS[2], '*', unpack(fields))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

_DEAD_LETTER = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[3], ARGV[3]) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
return 1
"""


# XRANGE's reply as a client made with decode_responses=True returns it (redis-py's
# annotations say bytes | str, and None, whatever the client decodes).
StreamRows = list[tuple[str, dict[str, str]]]


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def flat(fields: dict[str, str]) -> list[str]:
    return [x for pair in fields.items() for x in pair]


class Streams:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._xadd_once = redis.register_script(_XADD_ONCE)
        self._to_inbox = ScriptBatch(redis, _TO_INBOX)  # a reader places a whole batch in one round trip
        self._park = redis.register_script(_PARK)
        self._release_due = redis.register_script(_RELEASE_DUE)
        self._dead_letter = redis.register_script(_DEAD_LETTER)

    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def trim(self, stream: str, group: str) -> int:
        """Drop entries every consumer is done with: older than the oldest pending and the last delivered."""
        groups = {g["name"]: g for g in await self.redis.xinfo_groups(stream)}
        if group not in groups:
            return 0
        floor = groups[group]["last-delivered-id"]
        pending = await self.redis.xpending(stream, group)
        if pending["pending"]:
            floor = min(floor, pending["min"], key=_id_key)
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
        return bool(await self._xadd_once(keys=[marker, stream], args=[ttl, value, *flat(fields)]))

    async def to_inbox(self, stream: str, group: str, entry_id: str, inbox: str, lease: str, member: str) -> bool:
        """Place a pending entry in its thread's inbox; True when the thread needs a kick (no one holds it).

        A holder that gives a thread up with entries left (a failed step, a shutdown) leaves
        them pending, and a claim (`Worker._claim`) brings them back here.
        """
        return await self._to_inbox(keys=[stream, inbox, lease], args=[group, entry_id, member]) == 1

    async def park(
        self, stream: str, group: str, entry_id: str, delayed: str, due: float, fields: dict[str, str]
    ) -> None:
        """Acknowledge an entry and put a copy aside until `due` (epoch seconds)."""
        member = json.dumps([secrets.token_hex(4), *flat(fields)])
        await self._park(keys=[stream, delayed], args=[group, entry_id, int(due * 1000), member])

    async def schedule(self, delayed: str, due: float, fields: dict[str, str]) -> None:
        """Put an entry aside until `due`; it then goes onto the stream the delayed set feeds."""
        member = json.dumps([secrets.token_hex(4), *flat(fields)])
        await self.redis.zadd(delayed, {member: int(due * 1000)})

    async def release_due(self, delayed: str, stream: str, limit: int = 100) -> int:
        return int(await self._release_due(keys=[delayed, stream], args=[int(time.time() * 1000), limit]))

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
        await self._dead_letter(
            keys=[stream, self.keys.dlq(p), inbox or self.keys.attempts(p), self.keys.attempts(p)],
            args=[group, entry_id, member if inbox else "", *flat(record)],
        )

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
