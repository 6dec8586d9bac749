"""Dashboard sessions held in Redis, so that one can be ended before it expires.

A login records its session here (one hash for the deployment, field = session id,
value = when it was issued and expires, and from where); a page or an action counts
only while its session is still in the hash. Logging out deletes it, so a copy of
the cookie stops working at once, on every replica; an operator ends them all from
the health page, the API (`DELETE /api/v1/dashboard/sessions`) or the CLI
(`frontdesk dashboard sessions --end-all`).

One hash, not a key per session: the health page lists them without a SCAN (which
a Redis Cluster would have to run on every node), and an operator's handful of
sessions is small. Expired fields are dropped whenever the list is read or a
session is added.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from gateway.store.keys import Keys

MAX_AGENT = 200  # characters of a User-Agent kept for the list


@dataclass(frozen=True)
class SessionInfo:
    """What the health page and the API show of a session: never the id itself."""

    ref: str  # a short digest of the id, to tell sessions apart (and "this one")
    issued: float
    expires: float
    client: str  # the address the login came from
    agent: str  # its User-Agent, cut

    def public(self) -> dict[str, Any]:
        return asdict(self)


def ref_of(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()[:10]


class DashboardSessions:
    """The live dashboard sessions of a deployment."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.name = keys.key("dashboard", "sessions")

    async def add(self, sid: str, seconds: int, client: str = "", agent: str = "") -> None:
        now = time.time()
        record = {"issued": now, "expires": now + seconds, "client": client, "agent": agent[:MAX_AGENT]}
        await self._live(now)  # drops the expired ones
        await self.redis.hset(self.name, sid, json.dumps(record))

    async def live(self, sid: str) -> bool:
        """Whether `sid` was logged in and has been neither ended nor outlived."""
        raw = await self.redis.hget(self.name, sid)
        return raw is not None and json.loads(raw)["expires"] > time.time()

    async def end(self, sid: str) -> bool:
        return bool(await self.redis.hdel(self.name, sid))

    async def end_all(self) -> int:
        """End every session; how many were live."""
        ended = len(await self._live(time.time()))
        await self.redis.delete(self.name)
        return ended

    async def active(self) -> list[SessionInfo]:
        """The live sessions, newest first."""
        live = await self._live(time.time())
        found = [
            SessionInfo(ref_of(sid), r["issued"], r["expires"], r["client"], r["agent"]) for sid, r in live.items()
        ]
        return sorted(found, key=lambda s: s.issued, reverse=True)

    async def _live(self, now: float) -> dict[str, dict[str, Any]]:
        """The records not expired yet; the expired ones are deleted on the way."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.name))  # a decoding client
        records = {sid: json.loads(value) for sid, value in raw.items()}
        gone = [sid for sid, record in records.items() if record["expires"] <= now]
        if gone:
            await self.redis.hdel(self.name, *gone)
        return {sid: record for sid, record in records.items() if record["expires"] > now}
