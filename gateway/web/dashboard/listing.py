"""Pages of threads, newest first, filtered and searched without reading what is not shown.

Every filter is a sorted set of the partition (status, agent, origin channel,
person; see ThreadStore). A page walks the smallest of the chosen sets in order
and keeps the ids present in all the others (ZSCORE, in one script per
partition), so it reads at most a page of thread hashes however many threads
there are. A search for an id prefix walks the id index by lex order instead
(ids start with their creation time, so that order is newest first too).

The cursor names the last row shown (score and id, so threads updated in the
same millisecond are neither skipped nor repeated). A sparse combination of
filters may stop a walk after BUDGET ids of a partition with the page not yet
full; the page then ends early and its cursor carries on from where the walk
stopped.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.events import STATUSES
from gateway.store.keys import Keys
from gateway.store.scripts import Group, Script
from gateway.store.threads import person_key

BUDGET = 5000  # ids of one partition looked at per page, at most
_ID_PREFIX = "th_"

_WALK = """
limit, budget = tonumber(limit), tonumber(budget)
local chunk = 200
local found, looked, offset, exhausted = {}, 0, 0, 0
local last_m, last_s = '', ''
local top_score = tonumber(top)
while #found < 2 * limit and looked < budget do
  local rows, step
  if mode == 'score' then
    rows = redis.call('ZREVRANGEBYSCORE', walk, top, '-inf', 'WITHSCORES', 'LIMIT', offset, chunk)
    step = 2
  else
    rows = redis.call('ZREVRANGEBYLEX', walk, top, bottom, 'LIMIT', offset, chunk)
    step = 1
  end
  offset = offset + #rows / step
  for i = 1, #rows, step do
    local m, s = rows[i], (step == 2 and rows[i + 1] or '0')
    -- Thread ids are th_ and lower-case hex: Lua's string order is Redis's byte order for them.
    if not (after ~= '' and tonumber(s) == top_score and m >= after) then
      looked = looked + 1
      local keep = true
      for k = others_at + 1, others_at + others_n do
        if not redis.call('ZSCORE', KEYS[k], m) then keep = false break end
      end
      if keep then found[#found + 1] = m; found[#found + 1] = s end
      last_m, last_s = m, s
      if #found >= 2 * limit or looked >= budget then break end
    end
  end
  if #rows < chunk * step and #found < 2 * limit and looked < budget then exhausted = 1 break end
end
found[#found + 1] = last_m
found[#found + 1] = last_s
found[#found + 1] = exhausted
return found
"""


def walk_script() -> Script:
    """Walk `walk` newest first from a cursor; keep the members that are in every one of `others`.

    `mode` is 'score' or 'lex'; `bottom` bounds a lex walk; `after` is the cursor's member
    (score mode: the rows of the cursor's millisecond already shown are skipped). Returns
    {member, score, member, score, ..., last member looked at, its score, exhausted}.
    """
    return Script(
        _WALK,
        keys=["walk", Group("others")],
        args=["mode", "top", "bottom", "after", "limit", "budget"],
    )


WALK = walk_script()


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    agent: str | None = None
    channel: str | None = None
    q: str = ""  # a thread id prefix (th_…), or a person's address (optionally channel:address)

    @property
    def by_id(self) -> bool:
        return self.q.startswith(_ID_PREFIX)

    def active(self) -> bool:
        return bool(self.status or self.agent or self.channel or self.q)


@dataclass
class Page:
    rows: list[dict[str, str]]
    cursor: str | None  # pass back for the next (older) page; None: this is the last
    cut_short: bool = False  # the walk stopped before the page filled: more may match further on


class Listing:
    """Pages of thread metadata for the dashboard."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, channels: typing.Iterable[str] = ()) -> None:
        self.redis = redis
        self.keys = keys
        self.channels = set(channels)
        self._walk = redis.register_script(WALK.source)

    async def counts(self) -> dict[str, int]:
        """Threads per status, and in all ("all")."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.keys.partitions):
                pipe.zcard(self.keys.index(p))
                for status in STATUSES:
                    pipe.zcard(self.keys.status_index(p, status))
            sizes = await pipe.execute()
        width = len(STATUSES) + 1
        out = {"all": sum(sizes[0::width])}
        for i, status in enumerate(STATUSES, start=1):
            out[status] = sum(sizes[i::width])
        return out

    def _sets(self, p: int, f: Filters) -> list[str]:
        """The indexes a thread of partition `p` must be in to match `f` (besides an id prefix)."""
        k, sets = self.keys, []
        if f.status:
            sets.append(k.status_index(p, f.status))
        if f.agent:
            sets.append(k.facet_index(p, "agent", f.agent))
        channel, person = f.channel, None
        if f.q and not f.by_id:
            person = f.q
            named, sep, rest = f.q.partition(":")
            if sep and named in self.channels and rest:
                person, channel = rest, channel or named
        if channel:
            sets.append(k.facet_index(p, "channel", channel))
        if person is not None:
            sets.append(k.facet_index(p, "person", person_key(person)))
        return sets

    async def page(self, f: Filters, *, limit: int = 50, cursor: str | None = None) -> Page:
        """Up to `limit` threads matching `f`, older than `cursor`: three round trips whatever the partitions."""
        plans = await self._plans(f)
        args = self._walk_args(f, limit, cursor)
        async with self.redis.pipeline(transaction=False) as pipe:
            for first, *rest in plans:
                keys, values = WALK.pack(walk=first, others=rest, **args)
                await self._walk(keys=keys, args=values, client=pipe)
            walks = [self._read_walk(out, f, limit) for out in await pipe.execute()]
        found = sorted((row for rows, *_ in walks for row in rows), reverse=True)
        # Where a walk stopped early, what lies beyond is unknown: show only what sorts before.
        stops = [last for _, last, ended in walks if not ended and last is not None]
        horizon = max(stops) if stops else None
        if horizon is not None:
            found = [row for row in found if row >= horizon]
        shown = found[:limit]
        if len(shown) == limit:
            next_cursor = _cursor(shown[-1], f)
        elif horizon is not None:
            next_cursor = _cursor(horizon, f)
        else:
            next_cursor = None
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in shown:
                pipe.hgetall(self.keys.thread(row[-1]))
            metas = await pipe.execute()
        return Page(
            rows=[m for m in metas if m], cursor=next_cursor, cut_short=horizon is not None and len(shown) < limit
        )

    async def _plans(self, f: Filters) -> list[list[str]]:
        """Per partition, the keys a walk reads: the set walked first (the smallest), then the filters."""
        sets = [self._sets(p, f) for p in range(self.keys.partitions)]
        if f.by_id:
            return [[self.keys.id_index(p), *s] for p, s in enumerate(sets)]
        if all(len(s) < 2 for s in sets):
            return [s or [self.keys.index(p)] for p, s in enumerate(sets)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (k for s in sets for k in s):
                pipe.zcard(key)
            sizes = iter(await pipe.execute())
        return [[key for _, key in sorted((next(sizes), k) for k in s)] for s in sets]

    def _walk_args(self, f: Filters, limit: int, cursor: str | None) -> dict[str, typing.Any]:
        if f.by_id:
            top = f"({cursor}" if cursor else f"[{f.q}\xff"
            return dict(mode="lex", top=top, bottom=f"[{f.q}", after="", limit=limit, budget=BUDGET)
        score, member = _parse_cursor(cursor)
        upper = "+inf" if score is None else score
        return dict(mode="score", top=upper, bottom="-", after=member or "", limit=limit, budget=BUDGET)

    @staticmethod
    def _read_walk(out: list, f: Filters, limit: int):
        """(rows as sort keys, the last id looked at, whether the walk ended: no horizon needed)."""
        *flat, last_m, last_s, exhausted = out
        rows = [_sort_key(flat[i], flat[i + 1], f) for i in range(0, len(flat), 2)]
        # A walk that filled its page needs no horizon: what it did not see sorts after its rows.
        ended = bool(int(exhausted)) or len(rows) >= limit
        return rows, _sort_key(last_m, last_s, f) if last_m else None, ended


def _sort_key(member: str, score: str, f: Filters) -> tuple:
    return (member,) if f.by_id else (int(float(score)), member)


def _cursor(key: tuple, f: Filters) -> str:
    return key[0] if f.by_id else f"{key[0]}~{key[1]}"


def _parse_cursor(cursor: str | None) -> tuple[int | None, str | None]:
    if not cursor:
        return None, None
    score, sep, member = cursor.partition("~")
    try:
        return int(score), member if sep else None
    except ValueError:
        return None, None  # a mangled cursor starts from the newest
