"""Paging threads: filters and search read at most a page of thread hashes, at 100,000 threads too.

Hash reads are counted on the client's own connection (every command it sends),
not by timing, and not with INFO (a shared Redis serves other tests meanwhile).
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from dashkit import dashboard, login, message, wait_status

from gateway.events import STATUSES
from gateway.launch import launch_thread
from gateway.store.keys import Keys
from gateway.store.threads import person_key
from gateway.web.dashboard import listing as listing_module
from gateway.web.dashboard.listing import Filters, Listing

BASE_MS = 1_750_000_000_000
AGENTS = ("alpha", "beta", "gamma", "delta")
CHANNELS = ("sms", "email", "slack")


class CountingConnection(aioredis.Connection):
    """Records the name and first key of every command this connection sends."""

    sent: list[tuple[str, str]] = []

    def pack_command(self, *args):  # pipelines pack each of their commands through here too
        CountingConnection.sent.append(_name(args))
        return super().pack_command(*args)


def _name(args) -> tuple[str, str]:
    parts = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
    return parts[0].upper(), parts[1] if len(parts) > 1 else ""


@pytest.fixture
async def counted(redis_url):
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection, decode_responses=True)
    client = aioredis.Redis.from_pool(pool)
    try:
        yield client
    finally:
        await client.aclose()


def hash_reads() -> int:
    return sum(1 for name, key in CountingConnection.sent if ":thread:" in key)


def thread_row(i: int, score: int, *, rng: random.Random | None = None) -> dict[str, str]:
    pick = (lambda xs: rng.choice(xs)) if rng else None
    status = pick(STATUSES) if rng else STATUSES[i % 5]
    agent = pick(AGENTS) if rng else AGENTS[i % 4]
    channel = pick(CHANNELS) if rng else CHANNELS[i % 3]
    person = f"+1555{(rng.randrange(20) if rng else i % 1000):07d}"
    when = datetime.fromtimestamp(score / 1000, UTC).isoformat()
    return {
        "id": f"th_{BASE_MS + i:012x}{i:010x}",
        "agent": agent,
        "status": status,
        "channel": channel,
        "person": person,
        "created_at": when,
        "updated_at": when,
        "events": "3",
        "score": str(score),
    }


async def seed(redis: aioredis.Redis, keys: Keys, rows: list[dict[str, str]], batch: int = 10_000) -> None:
    """Write thread hashes and every index the way ThreadStore does, pipelined."""
    for start in range(0, len(rows), batch):
        zsets: dict[str, dict[str, float]] = defaultdict(dict)
        async with redis.pipeline(transaction=False) as pipe:
            for row in rows[start : start + batch]:
                tid, score = row["id"], float(row["score"])
                p = keys.thread_partition(tid)
                pipe.hset(keys.thread(tid), mapping={k: v for k, v in row.items() if k != "score"})
                zsets[keys.index(p)][tid] = score
                zsets[keys.status_index(p, row["status"])][tid] = score
                zsets[keys.facet_index(p, "agent", row["agent"])][tid] = score
                zsets[keys.facet_index(p, "channel", row["channel"])][tid] = score
                zsets[keys.facet_index(p, "person", person_key(row["person"]))][tid] = score
                zsets[keys.id_index(p)][tid] = 0
            for key, members in zsets.items():
                pipe.zadd(key, members)
            await pipe.execute()


def expected(rows: list[dict[str, str]], f: Filters) -> list[str]:
    """The brute-force answer: matching ids, newest first (id order for an id search)."""

    def matches(r):
        if (
            f.status
            and r["status"] != f.status
            or f.agent
            and r["agent"] != f.agent
            or f.channel
            and r["channel"] != f.channel
        ):
            return False
        if f.q.startswith("th_"):
            return r["id"].startswith(f.q)
        if f.q:
            named, sep, rest = f.q.partition(":")
            if sep and named in CHANNELS:
                return r["channel"] == named and person_key(r["person"]) == person_key(rest)
            return person_key(r["person"]) == person_key(f.q)
        return True

    found = [r for r in rows if matches(r)]
    if f.q.startswith("th_"):
        return [r["id"] for r in sorted(found, key=lambda r: r["id"], reverse=True)]
    return [r["id"] for r in sorted(found, key=lambda r: (int(r["score"]), r["id"]), reverse=True)]


async def all_pages(store: Listing, f: Filters, limit: int) -> tuple[list[str], int]:
    ids, cursor, pages = [], None, 0
    while True:
        page = await store.page(f, limit=limit, cursor=cursor)
        assert len(page.rows) <= limit
        ids += [r["id"] for r in page.rows]
        pages += 1
        if page.cursor is None:
            return ids, pages
        cursor = page.cursor
        assert pages < 10_000


async def test_100k_threads_first_and_deep_pages_read_one_page_of_hashes(counted, prefix):
    keys = Keys(prefix, 1)
    rows = [thread_row(i, BASE_MS + i) for i in range(100_000)]
    await seed(counted, keys, rows)
    store = Listing(counted, keys, CHANNELS)
    newest_first = [r["id"] for r in reversed(rows)]
    score_of = {r["id"]: r["score"] for r in rows}

    CountingConnection.sent.clear()
    first = await store.page(Filters(), limit=50)
    assert [r["id"] for r in first.rows] == newest_first[:50]
    assert hash_reads() == 50

    # A deep page: 60,000 threads in, through the cursor a page hands out (no offset scan).
    deep_row = rows[100_000 - 60_000]
    CountingConnection.sent.clear()
    deep = await store.page(Filters(), limit=50, cursor=f"{deep_row['score']}~{deep_row['id']}")
    assert [r["id"] for r in deep.rows] == newest_first[60_000:60_050]
    assert hash_reads() == 50
    assert deep.cursor == f"{rows[100_000 - 60_050]['score']}~{rows[100_000 - 60_050]['id']}"

    # Filters, alone and combined, and both kinds of search, from the top and deep down.
    for f in (
        Filters(status="failed"),
        Filters(agent="beta", channel="email"),
        Filters(status="waiting_approval", agent="gamma", channel="slack"),
        Filters(q="+15550000123"),
        Filters(q="sms:+15550000123"),
        Filters(q=rows[99_000]["id"][:13]),
    ):
        want = expected(rows, f)
        CountingConnection.sent.clear()
        page = await store.page(f, limit=50)
        assert [r["id"] for r in page.rows] == want[:50], f
        assert hash_reads() == len(page.rows) <= 50
        if len(want) > 1000:
            CountingConnection.sent.clear()
            cursor = f"{score_of[want[1000]]}~{want[1000]}"
            page = await store.page(f, limit=50, cursor=cursor)
            assert [r["id"] for r in page.rows] == want[1001:1051], f
            assert hash_reads() == 50

    counts = await store.counts()
    assert counts == {"all": 100_000, **{s: 20_000 for s in STATUSES}}
    # Nothing matches: the walk ends at once with no page to follow.
    empty = await store.page(Filters(q="+15550000007", status="failed"), limit=50)
    assert empty.rows == [] and empty.cursor is None


@pytest.mark.parametrize("partitions", [1, 3])
async def test_paging_through_everything_matches_a_brute_force_answer(counted, prefix, partitions, monkeypatch):
    """Many threads share a millisecond, partitions are merged, and walks are cut short by a tiny budget."""
    monkeypatch.setattr(listing_module, "BUDGET", 7)
    rng = random.Random(partitions)
    keys = Keys(prefix, partitions)
    rows = [thread_row(i, BASE_MS + i // 4, rng=rng) for i in range(600)]
    await seed(counted, keys, rows)
    store = Listing(counted, keys, CHANNELS)
    for f in (
        Filters(),
        Filters(status="done"),
        Filters(agent="alpha", status="running"),
        Filters(agent="delta", channel="sms", status="failed"),
        Filters(q="+15550000003"),
        Filters(q="email:+15550000004", agent="beta"),
        Filters(q=rows[300]["id"][:14]),
        Filters(q=rows[300]["id"][:14], status="waiting_human"),
    ):
        want = expected(rows, f)
        got, pages = await all_pages(store, f, limit=9)
        assert got == want, f
        assert pages >= -(-len(want) // 9)


async def test_threads_from_ingest_and_launch_are_indexed_and_listed(settings):
    """Both ways a thread comes to be (the worker's first save, the API's create) fill the indexes."""
    async with dashboard(settings) as dash:
        from_ingest = await dash.rt.ingest.accept(
            message("m1", "v1", sender="Ana@Example.com", channel="api"), "approver"
        )
        launched = await launch_thread(dash.rt, "echo", "hello", by="ops")
        await wait_status(dash.rt, from_ingest.thread_id, "waiting_approval")
        await wait_status(dash.rt, launched.id, "waiting_human")
        for query, shown, hidden in (
            ("/?agent=approver", from_ingest.thread_id, launched.id),
            ("/?agent=echo&channel=api", launched.id, from_ingest.thread_id),
            ("/?q=ana%40example.com", from_ingest.thread_id, launched.id),
            ("/?q=ops", launched.id, from_ingest.thread_id),
            (f"/?q={launched.id[:-3]}", launched.id, from_ingest.thread_id),
            ("/?status=waiting_approval", from_ingest.thread_id, launched.id),
        ):
            page = (await dash.client.get(query)).text
            assert shown in page and hidden not in page, query
        rows = (await dash.client.get("/?partial=rows")).text
        assert rows.lstrip().startswith("<tr") and launched.id in rows and "<html" not in rows
        page = (await dash.client.get("/")).text
        assert 'Waiting for approval <span class="count">1</span>' in page


async def test_the_list_page_pages_by_cursor(settings, redis_url):
    """The page shows 50 rows and an Older link whose page continues exactly after them."""
    async with dashboard(settings, workers=False) as dash:
        rows = [thread_row(i, BASE_MS + i) for i in range(120)]
        await seed(dash.rt.redis, dash.rt.keys, rows)
        first = (await dash.client.get("/")).text
        assert first.count('class="thread-link"') == 50 and 'rel="next"' in first
        older = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
        second = (await dash.client.get(older)).text
        assert rows[69]["id"] in second and rows[70]["id"] not in second and "← Newest" in second
        assert "data-refresh" not in second  # only the first page follows new threads


async def test_login_keeps_the_page_asked_for(settings):
    async with dashboard(settings, workers=False) as dash:
        dash.client.cookies.clear()
        r = await dash.client.get("/?status=failed")
        assert r.headers["location"] == "/dashboard/login?next=%2F%3Fstatus%3Dfailed"
        form = await dash.client.get(r.headers["location"])
        assert 'name="next" value="/?status=failed"' in form.text
        assert (await login(dash.client)).status_code == 303
