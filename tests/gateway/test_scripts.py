"""Every Lua script of gateway/, run through its builder against real Redis; and layouts that follow their constants."""

from __future__ import annotations

import importlib
import json
import pkgutil
import time

import pytest
import redis.asyncio as aioredis

import gateway
from gateway import outbox
from gateway.events import STATUSES
from gateway.store import ingest, streams, threads
from gateway.store.scripts import Group, Script
from gateway.web.dashboard import listing


@pytest.fixture
async def r(redis_url: str):
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def run(r, script: Script, **values):
    keys, args = script.pack(**values)
    return await r.eval(script.source, len(keys), *keys, *args)


def _modules():
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        yield importlib.import_module(info.name)


def test_every_lua_script_in_gateway_is_built_with_names_and_has_a_case_here():
    built, raw = {}, []
    for module in _modules():
        for name, value in vars(module).items():
            if name.startswith("__"):
                continue
            if isinstance(value, Script):
                built[f"{module.__name__}.{name}"] = value
            elif isinstance(value, str) and "redis.call(" in value:
                # A body, or a fragment that bodies share (the outbox's settling), is named by its Script.
                if not any(value in s.body for s in vars(module).values() if isinstance(s, Script)):
                    raw.append(f"{module.__name__}.{name}")
    assert raw == []  # Lua a builder does not name
    assert set(built) == set(CASES)


# ---------------------------------------------------------------- one case per script


async def _save(r, k: str):
    await r.set(f"{k}:lease", "me", px=60_000)
    await r.zadd(f"{k}:inbox", {"0001|inbound|th||": 0})
    await r.hset(f"{k}:attempts", "1-1", "2")
    answer = await run(
        r,
        threads.SAVE,
        **_save_keys(k, STATUSES),
        owner="me",
        member="0001|inbound|th||",
        entry_id="1-1",
        group="workers",
        tid="th",
        updated=1000,
        now=STATUSES.index("waiting_human") + 1,
        meta=json.dumps({"status": "waiting_human"}),
        keep_running="1",
        lease_ms=90_000,
        was=0,
        new_events=['{"type":"a"}', '{"type":"b"}'],
        messages=[json.dumps({"id": "th-7"})],
    )
    assert answer[0] == 1 and "|continue|th|" in answer[1]  # the continue entry is the inbox's head
    assert await r.hget(f"{k}:thread", "status") == "waiting_human"
    assert await r.lrange(f"{k}:events", 0, -1) == ['{"type":"a"}', '{"type":"b"}']
    assert await r.xlen(f"{k}:outbox") == 1 and await r.zscore(f"{k}:unsettled", "th-7") == 7
    assert await r.zscore(f"{k}:status:waiting_human", "th") == 1000
    assert [await r.zscore(f"{k}:facet:{i}", "th") for i in range(3)] == [1000] * 3
    assert await r.zscore(f"{k}:ids", "th") == 0
    assert await r.hget(f"{k}:attempts", "1-1") is None
    assert await r.zscore(f"{k}:inbox", "0001|inbound|th||") is None
    assert await r.pttl(f"{k}:lease") > 60_000
    # Someone else's lease: nothing written.
    await r.set(f"{k}:lease", "other")
    values = dict(_save_keys(k, STATUSES), owner="me", member="", entry_id="", group="workers", tid="th")
    values |= dict(updated=2000, now=1, meta="{}", keep_running="0", lease_ms=0, was=0, new_events=[], messages=[])
    assert await run(r, threads.SAVE, **values) == 0


def _save_keys(k: str, statuses) -> dict:
    names = ("thread", "events", "inbox", "lease", "inbound", "outbox", "index", "attempts", "id_index", "unsettled")
    keys = {name: f"{k}:{name}" for name in names} | {"id_index": f"{k}:ids"}
    return keys | {"status": [f"{k}:status:{s}" for s in statuses], "facets": [f"{k}:facet:{i}" for i in range(3)]}


async def _create(r, k: str):
    values = dict(
        thread=f"{k}:thread",
        events=f"{k}:events",
        index=f"{k}:index",
        status=f"{k}:status",
        inbound=f"{k}:inbound",
        facets=[f"{k}:facet:{i}" for i in range(3)],
        id_index=f"{k}:ids",
        meta=json.dumps({"id": "th", "agent": "a"}),
        updated=5,
        tid="th",
        new_events=['{"type":"user_message"}'],
    )
    assert await run(r, threads.CREATE, **values) == 1
    assert await run(r, threads.CREATE, **values) == 0  # the id is taken
    assert await r.hget(f"{k}:thread", "agent") == "a" and await r.llen(f"{k}:events") == 1
    assert await r.zscore(f"{k}:status", "th") == 5 and await r.zscore(f"{k}:facet:2", "th") == 5
    assert (await r.xrange(f"{k}:inbound"))[0][1] == {"k": "continue", "t": "th"}


async def _renew(r, k: str):
    await r.set(f"{k}:lease", "me", px=1000)
    assert await run(r, threads.RENEW, lease=f"{k}:lease", owner="me", ms=50_000) == 1
    assert await r.pttl(f"{k}:lease") > 1000
    assert await run(r, threads.RENEW, lease=f"{k}:lease", owner="other", ms=50_000) == 0


async def _release(r, k: str):
    await r.set(f"{k}:lease", "me")
    await r.zadd(f"{k}:inbox", {"e": 0})
    values = dict(lease=f"{k}:lease", inbox=f"{k}:inbox")
    assert await run(r, threads.RELEASE, **values, owner="other") == -1
    assert await run(r, threads.RELEASE, **values, owner="me") == 0  # an entry waits: kept
    await r.delete(f"{k}:inbox")
    assert await run(r, threads.RELEASE, **values, owner="me") == 1
    assert not await r.exists(f"{k}:lease")


async def _drop(r, k: str):
    await r.set(f"{k}:lease", "me")
    assert await run(r, threads.DROP, lease=f"{k}:lease", owner="other") == 0
    assert await run(r, threads.DROP, lease=f"{k}:lease", owner="me") == 1
    assert not await r.exists(f"{k}:lease")


def _inbound(k: str, seen: str, conversation: str = "c1", only_existing: str = "0") -> dict:
    """The values the accept and append scripts share, for a message `seen` in `conversation`."""
    return dict(
        seen=f"{k}:seen:{seen}",
        conversation=f"{k}:conv:{conversation}",
        inbound=f"{k}:inbound",
        candidate=f"th-{seen}",
        ttl=60,
        agent="a",
        data="{}",
        only_existing=only_existing,
        traceparent="",
    )


async def _accept(r, k: str):
    def message(seen: str, conversation: str = "c1", only_existing: str = "0", limit: int = 0) -> dict:
        rate = dict(rate=f"{k}:rate", member=seen, limit=limit, window=60)
        return _inbound(k, seen, conversation, only_existing) | rate

    assert await run(r, ingest.ACCEPT, **message("m1")) == [1, "th-m1"]
    assert await run(r, ingest.ACCEPT, **message("m1")) == [0, "th-m1"]  # a provider retry
    assert await run(r, ingest.ACCEPT, **message("m2")) == [1, "th-m1"]  # the conversation's thread
    assert await run(r, ingest.ACCEPT, **message("m3", "c2", only_existing="1")) == [2, ""]
    assert (await run(r, ingest.ACCEPT, **message("m4", "c3", limit=1)))[0] == 1
    status, ttl = await run(r, ingest.ACCEPT, **message("m5", "c3", limit=1))
    assert status == 3 and 0 < ttl <= 60
    assert (await r.xrange(f"{k}:inbound"))[0][1] == {"k": "inbound", "t": "th-m1", "a": "a", "d": "{}"}
    assert await r.zrange(f"{k}:rate", 0, -1) == ["m4"]  # the refused one is not in the window


async def _append(r, k: str):
    def message(seen: str, conversation: str = "c1", only_existing: str = "0") -> dict:
        return _inbound(k, seen, conversation, only_existing)

    assert await run(r, ingest.APPEND, **message("m1")) == [1, "th-m1"]
    assert await run(r, ingest.APPEND, **message("m1")) == [0, "th-m1"]
    assert await run(r, ingest.APPEND, **message("m2", "c2", only_existing="1")) == [2, ""]
    assert await r.xlen(f"{k}:inbound") == 1


async def _rate(r, k: str):
    def count(member: str) -> dict:
        return dict(rate=f"{k}:rate", member=member, limit=2, window=60)

    assert await run(r, ingest.RATE, **count("m1")) == [1, ""]
    assert await run(r, ingest.RATE, **count("m1")) == [1, ""]  # the same message again: not counted twice
    assert await run(r, ingest.RATE, **count("m2")) == [1, ""]
    status, wait = await run(r, ingest.RATE, **count("m3"))
    assert status == 3 and 1 <= wait <= 60
    assert await r.zrange(f"{k}:rate", 0, -1) == ["m1", "m2"] and 0 < await r.pttl(f"{k}:rate") <= 60_000


async def _rebind(r, k: str):
    await r.set(f"{k}:conv", "old")
    assert await run(r, ingest.REBIND, conversation=f"{k}:conv", old="old", new="new") == "new"
    assert await run(r, ingest.REBIND, conversation=f"{k}:conv", old="old", new="newer") == "new"  # moved already


async def _xadd_once(r, k: str):
    values = dict(marker=f"{k}:marker", stream=f"{k}:s", ttl=60, value="th", fields=["k", "resume", "t", "th"])
    assert await run(r, streams.XADD_ONCE, **values) == 1
    assert await run(r, streams.XADD_ONCE, **values) == 0
    assert [fields for _, fields in await r.xrange(f"{k}:s")] == [{"k": "resume", "t": "th"}]
    assert await r.get(f"{k}:marker") == "th"


async def _pending_entry(r, k: str) -> str:
    await r.xgroup_create(f"{k}:s", "g", id="0", mkstream=True)
    entry_id = await r.xadd(f"{k}:s", {"k": "inbound", "t": "th"})
    await r.xreadgroup("g", "c", {f"{k}:s": ">"})
    return entry_id


async def _to_inbox(r, k: str):
    entry_id = await _pending_entry(r, k)
    values = dict(stream=f"{k}:s", inbox=f"{k}:inbox", lease=f"{k}:lease", group="g", entry_id=entry_id, member="m")
    assert await run(r, streams.TO_INBOX, **values) == 1  # no one holds the thread
    await r.set(f"{k}:lease", "w")
    assert await run(r, streams.TO_INBOX, **values) == 2
    await r.xack(f"{k}:s", "g", entry_id)
    assert await run(r, streams.TO_INBOX, **values) == 0  # consumed already
    assert await r.zrange(f"{k}:inbox", 0, -1) == ["m"]


async def _park(r, k: str):
    entry_id = await _pending_entry(r, k)
    values = dict(stream=f"{k}:s", delayed=f"{k}:d", group="g", entry_id=entry_id, due=123, copy='["n","k","x"]')
    assert await run(r, streams.PARK, **values) == 1
    assert await r.zscore(f"{k}:d", '["n","k","x"]') == 123
    assert (await r.xpending(f"{k}:s", "g"))["pending"] == 0


async def _release_due(r, k: str):
    await r.zadd(f"{k}:d", {'["n1","k","now"]': 1, '["n2","k","later"]': 2**50})
    assert (
        await run(r, streams.RELEASE_DUE, delayed=f"{k}:d", stream=f"{k}:s", now=int(time.time() * 1000), limit=10) == 1
    )
    assert [fields for _, fields in await r.xrange(f"{k}:s")] == [{"k": "now"}]
    assert await r.zcard(f"{k}:d") == 1


async def _dead_letter(r, k: str):
    entry_id = await _pending_entry(r, k)
    await r.zadd(f"{k}:inbox", {"m": 0, "other": 1})
    await r.hset(f"{k}:attempts", entry_id, "3")
    values = dict(stream=f"{k}:s", dlq=f"{k}:dlq", inbox=f"{k}:inbox", attempts=f"{k}:attempts", group="g")
    assert await run(r, streams.DEAD_LETTER, **values, entry_id=entry_id, member="m", record=["reason", "x"]) == 1
    assert [fields for _, fields in await r.xrange(f"{k}:dlq")] == [{"reason": "x"}]
    assert await r.zrange(f"{k}:inbox", 0, -1) == ["other"]
    assert await r.hget(f"{k}:attempts", entry_id) is None
    assert (await r.xpending(f"{k}:s", "g"))["pending"] == 0


async def _walk(r, k: str):
    await r.zadd(f"{k}:all", {"th_a": 3, "th_b": 2, "th_c": 1})
    await r.zadd(f"{k}:agent", {"th_a": 3, "th_c": 1})
    await r.zadd(f"{k}:person", {"th_c": 1, "th_b": 2})
    values = dict(mode="score", top="+inf", bottom="-", after="", limit=10, budget=100)
    found = await run(r, listing.WALK, walk=f"{k}:all", others=[f"{k}:agent", f"{k}:person"], **values)
    assert found == ["th_c", "1", "th_c", "1", 1]  # the one in both; the last looked at; exhausted
    found = await run(r, listing.WALK, walk=f"{k}:all", others=[], **values)
    assert found[:6] == ["th_a", "3", "th_b", "2", "th_c", "1"]


def _settle_keys(k: str) -> dict:
    return dict(unsettled=f"{k}:unsettled", parked=f"{k}:parked", delayed=f"{k}:delayed")


async def _parked_behind(r, k: str) -> str:
    """th-4 unsettled at the head, th-5 parked behind it; the member th-5 waits as."""
    await r.zadd(f"{k}:unsettled", {"th-4": 4, "th-5": 5})
    member = json.dumps(["nonce", "m", "th-5 message"])
    await r.zadd(f"{k}:delayed", {member: 2**50})
    await r.hset(f"{k}:parked", "th-5", member)
    return member


async def _settling(r, k: str) -> dict:
    """What both outcome scripts take, for th-4's pending entry with th-5 parked behind it."""
    entry_id = await _pending_entry(r, k)
    await _parked_behind(r, k)
    await r.set(f"{k}:sending", "me")
    keys = dict(inbound=f"{k}:inbound", stream=f"{k}:s", sending=f"{k}:sending", **_settle_keys(k))
    return keys | dict(group="g", entry_id=entry_id, outbound_id="th-4", entry=["k", "delivery", "t", "th"])


async def _outcome(r, k: str):
    values = await _settling(r, k) | dict(sent=f"{k}:sent", ttl=60, status="sent")
    assert await run(r, outbox.OUTCOME, **values) == 1
    assert await r.get(f"{k}:sent") == "sent" and 0 < await r.ttl(f"{k}:sent") <= 60
    assert not await r.exists(f"{k}:sending")
    assert await r.zrange(f"{k}:unsettled", 0, -1) == ["th-5"]
    # The parked one goes to the stream at once, its nonce dropped.
    assert await r.hgetall(f"{k}:parked") == {} and await r.zcard(f"{k}:delayed") == 0
    assert [fields for _, fields in await r.xrange(f"{k}:s")][-1] == {"m": "th-5 message"}
    assert [fields for _, fields in await r.xrange(f"{k}:inbound")] == [{"k": "delivery", "t": "th"}]
    assert (await r.xpending(f"{k}:s", "g"))["pending"] == 0
    # The client re-sending the script (its answer lost): nothing recorded twice.
    assert await run(r, outbox.OUTCOME, **values) == 2
    assert await r.xlen(f"{k}:inbound") == 1


async def _fail(r, k: str):
    values = await _settling(r, k) | dict(dlq=f"{k}:dlq", reason="no", failed_at="12.5", copy='{"id":"th-4"}')
    entry_id = values["entry_id"]
    await r.zrem(f"{k}:delayed", await r.hget(f"{k}:parked", "th-5"))  # its safety timer released it already
    assert await run(r, outbox.FAIL, **values) == 1
    [(_, record)] = await r.xrange(f"{k}:dlq")
    assert record == {
        "source": f"{k}:s",
        "source_id": entry_id,
        "reason": "no",
        "failed_at": "12.5",
        "m": '{"id":"th-4"}',
    }
    assert not await r.exists(f"{k}:sending") and await r.hgetall(f"{k}:parked") == {}
    assert await r.xlen(f"{k}:s") == 1  # released by its timer already: not sent a second time
    assert [fields for _, fields in await r.xrange(f"{k}:inbound")] == [{"k": "delivery", "t": "th"}]
    assert await run(r, outbox.FAIL, **values) == 2
    assert await r.xlen(f"{k}:dlq") == 1


async def _wait_behind(r, k: str):
    await r.zadd(f"{k}:unsettled", {"th-4": 4, "th-5": 5})
    entry_id = await _pending_entry(r, k)

    def values(outbound_id: str, member: str = "copy") -> dict:
        return dict(
            stream=f"{k}:s",
            **_settle_keys(k),
            group="g",
            entry_id=entry_id,
            outbound_id=outbound_id,
            due=99,
            member=member,
        )

    assert await run(r, outbox.WAIT_BEHIND, **values("th-4")) == 0  # the head itself: send it
    assert await run(r, outbox.WAIT_BEHIND, **values("th-5")) == 1
    assert await r.zscore(f"{k}:delayed", "copy") == 99 and await r.hget(f"{k}:parked", "th-5") == "copy"
    assert (await r.xpending(f"{k}:s", "g"))["pending"] == 0
    assert await run(r, outbox.WAIT_BEHIND, **values("th-5")) == 2  # parked already
    # Back from its safety timer (still named in `parked`): sent without waiting longer.
    entry_id = await r.xadd(f"{k}:s", {"m": "copy"})
    await r.xreadgroup("g", "c", {f"{k}:s": ">"})
    assert await run(r, outbox.WAIT_BEHIND, **values("th-5")) == 3
    assert await r.hgetall(f"{k}:parked") == {}


CASES = {
    "gateway.store.threads.SAVE": _save,
    "gateway.store.threads.CREATE": _create,
    "gateway.store.threads.RENEW": _renew,
    "gateway.store.threads.RELEASE": _release,
    "gateway.store.threads.DROP": _drop,
    "gateway.store.ingest.ACCEPT": _accept,
    "gateway.store.ingest.APPEND": _append,
    "gateway.store.ingest.RATE": _rate,
    "gateway.store.ingest.REBIND": _rebind,
    "gateway.store.streams.XADD_ONCE": _xadd_once,
    "gateway.store.streams.TO_INBOX": _to_inbox,
    "gateway.store.streams.PARK": _park,
    "gateway.store.streams.RELEASE_DUE": _release_due,
    "gateway.store.streams.DEAD_LETTER": _dead_letter,
    "gateway.web.dashboard.listing.WALK": _walk,
    "gateway.outbox.OUTCOME": _outcome,
    "gateway.outbox.FAIL": _fail,
    "gateway.outbox.WAIT_BEHIND": _wait_behind,
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_script_runs_against_redis(name, r, prefix):
    await CASES[name](r, f"{prefix}:{{t}}")


# ---------------------------------------------------------------- layouts follow their constants


async def test_a_longer_status_tuple_moves_every_later_key_and_the_script_sees_it(r, prefix):
    k, longer = f"{prefix}:{{t}}", (*STATUSES, "archived")
    save = save_script_for(longer)
    # The script's own view of its bindings, through a body that only returns them.
    probe = Script(
        "return {KEYS[status_at + status_n], attempts, facets_n, id_index, unsettled, was, new_events_n, "
        "ARGV[new_events_at + 1], messages_n, ARGV[messages_at + 1]}",
        keys=save.keys,
        args=save.args,
    )
    values = dict(_save_keys(k, longer), owner="me", member="", entry_id="", group="workers", tid="th", updated=9)
    values |= dict(now=len(longer), meta='{"status":"archived"}', keep_running="0", lease_ms=0, was=0)
    values |= dict(new_events=["e1", "e2"], messages=[json.dumps({"id": "th-4"})])
    assert await run(r, probe, **values) == [
        f"{k}:status:archived",
        f"{k}:attempts",
        3,
        f"{k}:ids",
        f"{k}:unsettled",
        "0",
        2,
        "e1",
        1,
        '{"id": "th-4"}',
    ]
    # And the real body, on that layout. Status not known: every index is cleared, the new one's too.
    await r.set(f"{k}:lease", "me")
    for key in values["status"]:
        await r.zadd(key, {"th": 1})
    assert (await run(r, save, **(values | {"now": 1})))[0] == 1
    assert [await r.zscore(key, "th") for key in values["status"]] == [9, None, None, None, None, None]
    assert await r.zscore(f"{k}:ids", "th") == 0 and await r.zscore(f"{k}:unsettled", "th-4") == 4
    # From the first status to the new last one.
    assert (await run(r, save, **(values | {"was": 1, "updated": 10})))[0] == 1
    assert [await r.zscore(key, "th") for key in values["status"]] == [None, None, None, None, None, 10]
    # The old number of status keys no longer fits that layout.
    with pytest.raises(ValueError, match="status"):
        save.pack(**(values | {"status": values["status"][:-1]}))


def save_script_for(statuses) -> Script:
    return threads.save_script(statuses)


async def test_argument_lists_count_themselves_wherever_the_fixed_arguments_end(r):
    script = Script(
        "return {a, b_at, b_n, ARGV[b_at + b_n], c_at, c_n, ARGV[c_at + 1], d_n, ARGV[#ARGV], k_at, k_n, KEYS[#KEYS]}",
        keys=[Group("k", 2), "last"],
        args=["a", Group("b"), Group("c"), Group("d")],
    )
    keys, args = script.pack(k=["k1", "k2"], last="k3", a="x", b=["b1", "b2", "b3"], c=[], d=["d1", "d2"])
    assert await r.eval(script.source, len(keys), *keys, *args) == [
        "x", 3, 3, "b3", 6, 0, "d1", 2, "d2", 0, 2, "k3"
    ]  # fmt: skip


def test_layouts_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="after every other"):
        Script("", args=[Group("many"), "one"])
    with pytest.raises(ValueError, match="named twice"):
        Script("", keys=["x"], args=["x"])
    with pytest.raises(ValueError, match="Lua name"):
        Script("", args=["end"])
    with pytest.raises(ValueError, match="last group of keys"):
        Script("", keys=[Group("many"), "one"])
    script = Script("", keys=["a", Group("g", 2)], args=["b"])
    with pytest.raises(TypeError, match="'c'"):
        script.pack(a=1, g=[1, 2], c=2)
    with pytest.raises(TypeError, match="'b'"):
        script.pack(a=1, g=[1, 2])
    with pytest.raises(ValueError, match="'g' takes 2 values, got 1"):
        script.pack(a=1, g=[1], b=2)
