"""The thread store against a real Redis: a step appends, every event type round-trips,
and threads stored by an older version still load."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from gateway.events import (
    ApprovalDecision,
    ApprovalRequested,
    Attachment,
    Contact,
    ContextFetched,
    DeliveryEvent,
    DoneForNow,
    Error,
    Event,
    HumanResponse,
    Note,
    RequestHumanInput,
    Thread,
    Timeout,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
)
from gateway.store.keys import Keys
from gateway.store.threads import ThreadStore, dump_event


class CountingConnection(aioredis.Connection):
    """A redis-py connection that counts the bytes it writes to the server."""

    written = 0

    async def send_packed_command(self, command, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (bytes, str)) else list(command)
        CountingConnection.written += sum(len(c.encode() if isinstance(c, str) else c) for c in chunks)
        await super().send_packed_command(chunks, check_health)


@pytest.fixture
async def counted(redis_url, prefix):
    pool = aioredis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection, decode_responses=True, max_connections=1
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        yield ThreadStore(client, Keys(prefix, 1))
    finally:
        await client.aclose()


def _thread(keys: Keys, n_events: int) -> Thread:
    events: list = [UserMessage(text="steps=many", sender="sms:+15550001", channel="sms")]
    while len(events) < n_events:
        i = len(events)
        events += [
            ToolCall(call_id=f"c{i:05d}", tool="tick", arguments={"n": i}),
            ToolResult(call_id=f"c{i:05d}", result=i),
        ]
    return Thread(
        id=keys.new_thread_id(),
        agent="steps",
        origin=Contact(channel="sms", address="+15550001"),
        events=events[:n_events],
    )


async def _step(store: ThreadStore, thread: Thread) -> tuple[Thread, list, int]:
    """Apply one step (two new events) through the real save; return the bytes it sent."""
    assert await store.acquire(thread.id, "w1", 10_000)
    new = [ToolCall(call_id="c-next", tool="tick", arguments={"n": 0}), ToolResult(call_id="c-next", result=0)]
    after = thread.with_events(*new)
    before = CountingConnection.written
    assert await store.save(after, new, owner="w1", entry=None)
    return after, new, CountingConnection.written - before


async def test_a_step_appends_rather_than_rewrites(counted):
    store = counted
    long, short, warm = _thread(store.keys, 1000), _thread(store.keys, 10), _thread(store.keys, 10)
    for thread in (long, short, warm):
        assert await store.create(thread)
    await _step(store, warm)  # loads the script and opens the connection: neither is the step's cost

    long_after, long_new, long_bytes = await _step(store, long)
    short_after, short_new, short_bytes = await _step(store, short)

    # The 1,000-event thread's save sends what the 10-event one does, give or take the
    # digits of its event count, and far less than its events would take to rewrite.
    assert long_bytes <= short_bytes + 16, (long_bytes, short_bytes)
    assert long_bytes * 20 < sum(len(dump_event(e)) for e in long.events)
    redis = store.redis
    for before, after, new in ((long, long_after, long_new), (short, short_after, short_new)):
        key = store.keys.events(after.id)
        assert await redis.llen(key) == len(before.events) + 2
        assert await redis.lrange(key, -2, -1) == [dump_event(e) for e in new]
        assert await redis.lrange(key, 0, 0) == [dump_event(before.events[0])]
        loaded = await ThreadStore(redis, store.keys).load(after.id)
        assert loaded.events == after.events


async def test_a_load_reads_only_what_was_appended_since_and_hands_back_the_events_held(rt_store):
    """Events only grow, so what a store read or wrote is a prefix of what is stored: a load reads
    the rest (another worker's saves included) and the events it held come back as the same
    objects, which the context renderer's blocks are kept for (agents/kit/context.py)."""
    store, other = rt_store, ThreadStore(rt_store.redis, rt_store.keys)
    thread = _thread(store.keys, 50)
    assert await store.create(thread)
    first = await store.load(thread.id)
    again = await store.load(thread.id)
    assert again == first and all(a is b for a, b in zip(again.events, first.events, strict=True))

    # Another worker takes the thread up and steps it twice; this store's next load has its events.
    grown = await other.load(thread.id)
    assert await other.acquire(thread.id, "w2", 10_000)
    for n in range(2):
        new = [ToolCall(call_id=f"w2-{n}", tool="tick", arguments={"n": n}), ToolResult(call_id=f"w2-{n}", result=n)]
        grown = grown.with_events(*new)
        assert await other.save(grown, new, owner="w2", entry=None)
    after = await store.load(thread.id)
    assert after.events == grown.events and after.events[0] is first.events[0]
    assert after == await ThreadStore(store.redis, store.keys).load(thread.id)

    # What a save of this store's wrote is held too: the next load hands those events back.
    assert await store.redis.delete(store.keys.lease(thread.id))
    assert await store.acquire(thread.id, "w1", 10_000)
    mine = after.with_events(DoneForNow(text="done"))
    assert await store.save(mine, mine.events[-1:], owner="w1", entry=None)
    assert (await store.load(thread.id)).events[-1] is mine.events[-1]


async def test_a_load_reads_it_all_when_the_stored_events_are_not_what_was_held(rt_store):
    """Redis that lost writes (a restart from an older AOF), with other events appended since: the
    event where the held ones end differs, so the load reads the whole list again."""
    store = rt_store
    thread = _thread(store.keys, 9)
    assert await store.create(thread)
    held = await store.load(thread.id)
    key = store.keys.events(thread.id)
    # The last two events lost, then three others saved in their place: the count alone would pass.
    await store.redis.rpop(key, 2)
    other = [UserMessage(text=f"other {i}", channel="sms") for i in range(3)]
    await store.redis.rpush(key, *(dump_event(e) for e in other))
    await store.redis.hset(store.keys.thread(thread.id), "events", "10")
    loaded = await store.load(thread.id)
    assert loaded.events == [*held.events[:7], *other]
    assert loaded == await ThreadStore(store.redis, store.keys).load(thread.id)


async def test_the_events_a_store_holds_are_bounded_in_events(rt_store, monkeypatch):
    from gateway.store import threads

    monkeypatch.setattr(threads, "KNOWN_EVENTS", 100)
    store = rt_store
    made = [_thread(store.keys, 30) for _ in range(6)]
    for thread in made:
        assert await store.create(thread)
        await store.load(thread.id)
    newest = await store.load(made[-1].id)
    oldest = await store.load(made[0].id)  # read again from Redis: it was let go
    assert newest.events == made[-1].events and oldest.events == made[0].events
    assert sum(len(events) for events, _ in store._known.values()) <= 100


def _every_event() -> list:
    at = datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
    ops = Contact(
        channel="slack", address="U0OPS", conversation="T1/C1/1.2", reply_to={"channel": "C1", "thread_ts": "1.2"}
    )
    usage = Usage(input_tokens=120, output_tokens=7, model="demo")
    return [
        UserMessage(
            at=at,
            id="SM1",
            text="deploy v2 please",
            sender="sms:+15550001",
            channel="sms",
            reply_to={"from": "+15559999", "to": "+15550001"},
            attachments=[
                Attachment(
                    filename="log.txt",
                    content_type="text/plain",
                    size=12,
                    sha256="ab" * 32,
                    ref="https://example.test/m/1",
                )
            ],
            data={"nested": {"list": [1, 2.5, None, "x"]}},
            full_text="deploy v2 please\n> quoted",
        ),
        ContextFetched(at=at, name="recent_deploys", result=[{"version": "v1", "ok": True}]),
        ToolCall(at=at, call_id="c1", tool="lookup", arguments={"q": "v2", "limit": 3}, usage=usage),
        ToolResult(at=at, call_id="c1", result={"found": ["v2"], "count": 1}),
        Error(at=at, kind="tool_error", message="lookup timed out", usage=usage),
        Error(at=at, kind="dead_letter", message="continue entry 17-0 dead-lettered: boom", source_id="17-0"),
        RequestHumanInput(
            at=at,
            text="Which region?",
            choices=["eu", "us"],
            urgency="high",
            contact=ops,
            deadline=at + timedelta(hours=1),
            usage=usage,
        ),
        Timeout(at=at, request_index=6),
        HumanResponse(at=at, id="SM2", text="eu", sender="slack:U0OPS", channel="slack", reply_to={"thread_ts": "1.2"}),
        ApprovalRequested(
            at=at, call_id="c2", tool="deploy", arguments={"version": "v2", "region": "eu"}, contact=ops, usage=usage
        ),
        Note(at=at, kind="unclear_approval", text="maybe", call_id="c2", sender="slack:U0OPS", id="ev3"),
        ApprovalDecision(at=at, call_id="c2", approved=True, comment="go", by="slack:U0OPS", id="ev4"),
        DoneForNow(at=at, text="Deployed v2 to eu.", usage=usage),
        DeliveryEvent(at=at, outbound_id="th_x-12", channel="slack", status="sent", detail="1.3", contact=ops),
    ]


def _event_types() -> set[str]:
    union = typing.get_args(Event)[0]
    return {cls.model_fields["type"].default for cls in typing.get_args(union)}


async def test_every_event_type_round_trips(rt_store):
    store = rt_store
    events = _every_event()
    assert {e.type for e in events} == _event_types(), "a new event type needs a case here"
    origin = Contact(
        channel="sms", address="+15550001", conversation="+15550001/+15559999", reply_to={"from": "+15559999"}
    )
    created = Thread(
        id=store.keys.new_thread_id(),
        agent="deploybot",
        origin=origin,
        events=events[:4],
        responders=["sms:+15550001", "slack:U0OPS"],
        approvers=["slack:U0OPS"],
    )
    assert await store.create(created)
    # The rest arrive the way a worker writes them: appended by saves under the lease.
    assert await store.acquire(created.id, "w1", 10_000)
    thread = created
    for event in events[4:]:
        thread = thread.with_events(event)
        assert await store.save(thread, [event], owner="w1", entry=None)
    loaded = await ThreadStore(store.redis, store.keys).load(created.id)  # from Redis, not the events held
    assert loaded == thread
    assert [type(e) for e in loaded.events] == [type(e) for e in events]
    assert loaded.public()["status"] == thread.status


async def test_a_thread_stored_by_an_older_version_still_loads(rt_store):
    """The first stored shape: no updated_at, people or version in the hash; events without newer fields."""
    store = rt_store
    tid = store.keys.new_thread_id()
    await store.redis.hset(
        store.keys.thread(tid),
        mapping={
            "id": tid,
            "agent": "helpdesk",
            "origin": json.dumps({"channel": "sms", "address": "+15550001"}),
            "created_at": "2024-01-02T03:04:05+00:00",
        },
    )
    old_events = [
        {"type": "user_message", "text": "hi", "at": "2024-01-02T03:04:05+00:00"},
        {"type": "tool_call", "call_id": "c1", "tool": "lookup", "at": "2024-01-02T03:04:06+00:00", "retired_field": 1},
        {"type": "request_human_input", "text": "which one?", "at": "2024-01-02T03:04:07+00:00"},
        {
            "type": "delivery",
            "outbound_id": f"{tid}-2",
            "channel": "sms",
            "status": "sent",
            "at": "2024-01-02T03:04:08+00:00",
        },
    ]
    await store.redis.rpush(store.keys.events(tid), *[json.dumps(e) for e in old_events])
    thread = await store.load(tid)
    assert thread is not None
    assert [e.type for e in thread.events] == ["user_message", "tool_call", "request_human_input", "delivery"]
    assert thread.updated_at == thread.created_at
    assert thread.responders == [] and thread.approvers == [] and thread.version == 1
    assert thread.events[1].arguments == {} and thread.events[2].choices == []
    assert thread.status == "waiting_human"


@pytest.fixture
async def rt_store(redis_url, prefix):
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield ThreadStore(client, Keys(prefix, 1))
    finally:
        await client.aclose()


async def test_the_thread_is_in_exactly_its_status_index_after_every_save(rt_store):
    """Saves that name the status the thread had clear only that index; a save that does not, all."""
    from gateway.events import STATUSES, DoneForNow, RequestHumanInput, UserMessage

    store = rt_store
    p = store.keys.thread_partition
    thread = Thread(
        id=store.keys.new_thread_id(),
        agent="steps",
        origin=Contact(channel="sms", address="+15550001"),
        events=[UserMessage(text="hi", sender="sms:+1", channel="sms")],
    )
    assert await store.create(thread)
    assert await store.acquire(thread.id, "w1", 10_000)

    async def indexed() -> list[str]:
        return [
            s
            for s in STATUSES
            if await store.redis.zscore(store.keys.status_index(p(thread.id), s), thread.id) is not None
        ]

    assert await indexed() == ["running"]
    steps = [
        (RequestHumanInput(text="which one?"), "waiting_human"),
        (UserMessage(text="that one", sender="sms:+1", channel="sms"), "running"),  # (a human_response would do too)
        (ToolCall(call_id="c1", tool="tick", arguments={}), "running"),
        (DoneForNow(text="done"), "done"),
    ]
    for event, status in steps:
        before = thread.status
        thread = thread.with_events(event)
        assert thread.status == status
        assert await store.save(thread, [event], owner="w1", entry=None, previous_status=before)
        assert await indexed() == [status]
    # A caller that does not know the previous status (None): every other index is cleared anyway.
    await store.redis.zadd(store.keys.status_index(p(thread.id), "failed"), {thread.id: 1})
    thread = thread.with_events(UserMessage(text="again", sender="sms:+1", channel="sms"))
    assert await store.save(thread, thread.events[-1:], owner="w1", entry=None)
    assert await indexed() == [thread.status]
