"""Dead letters: what they say, and putting one back, for the CLI, the API and the dashboard alike.

A listing is newest first across partitions: an operator looks for what just failed, and a
`limit` then keeps the recent ones. Replaying everything goes oldest first, so that a
thread's entries return to their stream in the order they first arrived.

A replay is recorded on its thread as a `note` naming who did it, whoever asks (an API
caller, the dashboard, `frontdesk dlq replay`). The note is queued on the thread's inbound
stream before the entry goes back, so the thread's single writer appends it first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.errors import Malformed
from gateway.events import Note
from gateway.store.entries import Entry, stream_order
from gateway.store.keys import Keys

if TYPE_CHECKING:
    from gateway.runtime import Runtime
    from gateway.store.ingest import Ingest
    from gateway.store.streams import Streams
    from gateway.store.threads import ThreadStore

_SCAN_CHUNK = 200


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead-letter stream, with what it was about."""

    partition: int
    entry_id: str
    source: str  # the stream it came from: "inbound" or "outbox"
    source_id: str
    reason: str
    failed_at: float
    thread_id: str | None
    kind: str  # the entry kind, or "outbound" for a message that could not be delivered
    outbound_id: str | None = None

    @property
    def ref(self) -> str:
        """What `dlq replay` and the replay route take."""
        return f"{self.partition}:{self.entry_id}"

    def public(self) -> dict[str, Any]:
        """The one summary row: the API's JSON and `frontdesk dlq list --json`."""
        return {
            "id": self.ref,
            "source": self.source,
            "source_id": self.source_id,
            "reason": self.reason,
            "failed_at": self.failed_at,
            "thread_id": self.thread_id,
            "kind": self.kind,
            "outbound_id": self.outbound_id,
        }


def to_dead_letter(p: int, entry_id: str, fields: dict[str, str]) -> DeadLetter:
    thread_id, kind, outbound_id = fields.get("t"), fields.get("k", "?"), None
    if "m" in fields:  # an outbound message the sender gave up on
        kind = "outbound"
        try:
            message = json.loads(fields["m"])
            thread_id, outbound_id = message.get("thread_id"), message.get("id")
        except (ValueError, AttributeError):
            pass
    try:
        failed_at = float(fields.get("failed_at", 0))
    except ValueError:
        failed_at = 0.0
    return DeadLetter(
        partition=p,
        entry_id=entry_id,
        source=fields.get("source", "").rsplit(":", 1)[-1],
        source_id=fields.get("source_id", ""),
        reason=fields.get("reason", ""),
        failed_at=failed_at,
        thread_id=thread_id or None,
        kind=kind,
        outbound_id=outbound_id,
    )


def parse_ref(ref: str, partitions: int) -> tuple[int, str]:
    """`partition:entry-id` as (partition, entry id); Malformed if it is not one."""
    p, _, entry_id = ref.partition(":")
    if not p.isdigit() or int(p) >= partitions or not entry_id:
        raise Malformed(f"{ref!r} is not a dead letter id (partition:entry-id)")
    return int(p), entry_id


class DeadLetters:
    """The dead-letter streams of every partition."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, streams: Streams, store: ThreadStore, ingest: Ingest):
        # Any: the client decodes replies to str, which redis-py's annotations cannot express.
        self.redis: Any = redis
        self.keys, self.streams, self.store, self.ingest = keys, streams, store, ingest

    @classmethod
    def of(cls, rt: Runtime) -> DeadLetters:
        return cls(rt.redis, rt.keys, rt.streams, rt.store, rt.ingest)

    async def newest(self, limit: int = 100) -> list[DeadLetter]:
        """The newest `limit` dead letters across partitions, newest first."""
        found: list[DeadLetter] = []
        for p in range(self.keys.partitions):
            for entry_id, fields in await self.redis.xrevrange(self.keys.dlq(p), count=limit):
                found.append(to_dead_letter(p, entry_id, fields))
        found.sort(key=lambda d: stream_order(d.entry_id), reverse=True)
        return found[:limit]

    async def get(self, ref: str) -> DeadLetter | None:
        """The dead letter named `partition:entry-id`, or None."""
        p, entry_id = parse_ref(ref, self.keys.partitions)
        try:
            rows = await self.redis.xrange(self.keys.dlq(p), entry_id, entry_id)
        except ResponseError:  # Redis refuses an ill-formed stream id
            raise Malformed(f"{entry_id!r} is not a stream entry id") from None
        return to_dead_letter(p, rows[0][0], rows[0][1]) if rows else None

    async def find_for_thread(self, thread_id: str, match: Callable[[DeadLetter], bool]) -> DeadLetter | None:
        """The newest dead letter of a thread's partition that `match` accepts (a scan: the stream stays short)."""
        p = self.keys.thread_partition(thread_id)
        top = "+"
        while True:
            rows = await self.redis.xrevrange(self.keys.dlq(p), max=top, count=_SCAN_CHUNK)
            for entry_id, fields in rows:
                dead = to_dead_letter(p, entry_id, fields)
                if dead.thread_id == thread_id and match(dead):
                    return dead
            if len(rows) < _SCAN_CHUNK:
                return None
            top = f"({rows[-1][0]}"

    async def replay(self, dead: DeadLetter, by: str) -> bool:
        """Put `dead` back on its stream, noting on its thread who did it; False if it is gone."""
        if dead.thread_id and await self.store.exists(dead.thread_id):
            if dead.kind == "outbound":
                note = Note(kind="delivery_retry", text=f"delivery {dead.outbound_id} queued again", sender=by)
            else:
                text = f"dead-lettered {dead.kind} entry {dead.source_id} replayed"
                note = Note(kind="replay", text=text, sender=by)
            data = note.model_dump(mode="json", exclude_none=True)
            await self.ingest.enqueue(Entry(kind="note", thread_id=dead.thread_id, data=data))
        return await self.streams.replay(dead.partition, dead.entry_id)

    async def replay_all(self, by: str, limit: int = 10_000) -> int:
        """Replay up to `limit` dead letters, oldest first; how many went back."""
        done = 0
        for dead in reversed(await self.newest(limit)):
            done += await self.replay(dead, by)
        return done
