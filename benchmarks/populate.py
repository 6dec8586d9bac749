"""Stored threads in bulk, in the real stored format, for the curves against stored threads.

One template thread (a user message and the agent's `done_for_now`: what a webhook
question leaves) is rendered once by ThreadStore's own code (`_meta`, `dump_event`,
`_facet_keys`, Keys); each stored thread is that template with its own id and time,
so its hash and event list are what `ThreadStore.create` writes for it, byte for
byte (`check` compares the two on a live Redis before a run uses them). The indexes
get the members and scores `create` gives them, in ZADDs of a thousand members;
nothing is queued (these threads are at rest). Every thread has the same agent,
channel and person, so the facet sets are as large as the index.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis
import redis.asyncio as aioredis

from gateway.events import Contact, DoneForNow, Thread, UserMessage, derive_status, new_id
from gateway.store.keys import Keys
from gateway.store.threads import ThreadStore, dump_event

BATCH = 1000
_START = datetime(2026, 1, 1, tzinfo=UTC)
_TID = "th_000000000000template"


def _thread(agent: str, tid: str, at: datetime) -> Thread:
    return Thread(
        id=tid,
        agent=agent,
        origin=Contact(channel="webhook", address="https://caller.bench.example/hook"),
        events=[
            UserMessage(at=at, id="msg_bench", text="What is 1 plus 2?", channel="webhook"),
            DoneForNow(at=at, text="1 plus 2 is 3."),
        ],
        created_at=at,
        updated_at=at,
    )


def _stamps(at: datetime) -> tuple[str, str]:
    """How a time appears in the hash (isoformat) and in an event's JSON (pydantic)."""
    return at.isoformat(), UserMessage(at=at, text="").model_dump_json(include={"at"})[7:-2]


class Template:
    """One stored thread's hash and events, ready to be copied under a new id and time."""

    def __init__(self, keys: Keys, agent: str) -> None:
        self.keys = keys
        self.store = ThreadStore.__new__(ThreadStore)  # its pure helpers only: no client needed
        self.store.keys = keys
        thread = _thread(agent, _TID, _START)
        self.thread = thread
        self.status = derive_status(thread.events)
        self.meta = ThreadStore._meta(self.store, thread, self.status, full=True)
        self.events = [dump_event(e) for e in thread.events]
        self.iso, self.json = _stamps(_START)

    def rows(self, tid: str, at: datetime) -> tuple[dict[str, str], list[str]]:
        iso, js = _stamps(at) if at != _START else (self.iso, self.json)
        meta = {k: v.replace(_TID, tid).replace(self.iso, iso) for k, v in self.meta.items()}
        return meta, [e.replace(_TID, tid).replace(self.json, js) for e in self.events]

    def facets(self, p: int) -> list[str]:
        return ThreadStore._facet_keys(self.store, p, self.thread)


def populate(url: str, keys: Keys, agent: str, start: int, stop: int) -> None:
    """Store threads number `start` to `stop - 1`, thread i updated at _START + i ms."""
    t = Template(keys, agent)
    client = redis.Redis.from_url(url)
    try:
        for lo in range(start, stop, BATCH):
            pipe = client.pipeline(transaction=False)
            scored: dict[int, dict[str, int]] = {}
            for i in range(lo, min(stop, lo + BATCH)):
                at = _START + timedelta(milliseconds=i)
                tid = new_id("th_")
                meta, events = t.rows(tid, at)
                pipe.hset(keys.thread(tid), mapping=meta)
                pipe.rpush(keys.events(tid), *events)
                scored.setdefault(keys.thread_partition(tid), {})[tid] = int(at.timestamp() * 1000)
            for p, members in scored.items():
                for name in (keys.index(p), keys.status_index(p, t.status), *t.facets(p)):
                    pipe.zadd(name, members)
                pipe.zadd(keys.id_index(p), dict.fromkeys(members, 0))
            pipe.execute()
    finally:
        client.close()


def check(url: str, keys: Keys, agent: str) -> None:
    """Fail unless `populate`'s copy of a thread is what ThreadStore.create stores for it."""
    t = Template(keys, agent)
    at = _START + timedelta(milliseconds=12_345)
    real, copied = new_id("th_"), new_id("th_")

    async def create() -> None:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            await ThreadStore(client, keys).create(_thread(agent, real, at))
        finally:
            await client.aclose()

    asyncio.run(create())
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        meta, events = t.rows(copied, at)
        want_meta = {k: v.replace(real, copied) for k, v in client.hgetall(keys.thread(real)).items()}
        want_events = [e.replace(real, copied) for e in client.lrange(keys.events(real), 0, -1)]
        if meta != want_meta or events != want_events:
            raise RuntimeError(
                f"populate's thread differs from ThreadStore.create's:\n{meta}\n{want_meta}\n{events}\n{want_events}"
            )
    finally:
        client.close()


def used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()
