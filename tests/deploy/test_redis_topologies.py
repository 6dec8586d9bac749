"""Whole threads through a 3-master Redis Cluster and through Sentinel.

The cluster is real redis-server processes on loopback; with 4 partitions the
streams spread over the nodes, and every script, transaction and pipeline the
core sends must stay on one slot — redis-py refuses a cross-slot script before
sending it, so a key without its partition's hash tag fails here.
"""

from __future__ import annotations

import secrets

import pytest
from helpers import background, eventually, make_settings
from plugins import EchoAgent, FailingAgent, StepsAgent
from recorder import Recorder
from redis.asyncio.cluster import RedisCluster
from redis_procs import redis_cluster, redis_sentinel

from gateway.events import Contact, InboundMessage
from gateway.launch import launch_thread
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.worker import Worker


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory):
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as ports:
        # One node is enough to start from: the client learns the others.
        yield f"redis+cluster://127.0.0.1:{ports[0]}"


def _message(i: str, text: str, conversation: str) -> InboundMessage:
    return InboundMessage(id=i, channel="rec", conversation=conversation, sender="ann", text=text)


async def _status(rt, thread_id: str) -> str | None:
    return (await rt.store.meta(thread_id)).get("status")


async def _question_and_answer(rt, recorder: Recorder, n: int) -> list[str]:
    """Start `n` threads, answer each question on the conversation it opened; their ids once done."""
    ids = []
    for i in range(n):
        accepted = await rt.ingest.accept(_message(f"m{i}", f"hello {i}", f"conv-{i}"), "echo")
        ids.append(accepted.thread_id)
    for tid in ids:
        await eventually(lambda: recorder.texts(tid))
        # The question went out as a new conversation ("dm-<thread>"); the answer comes back on it.
        await eventually(lambda: rt.ingest.thread_for("rec", f"dm-{tid}"))
        await rt.ingest.accept(_message(f"a-{tid}", "yes", f"dm-{tid}"), "echo")
    for tid in ids:
        await eventually(lambda: _status_is(rt, tid, "done"))
        await eventually(lambda: len(recorder.texts(tid)) == 2)
    return ids


async def _status_is(rt, thread_id: str, status: str) -> bool:
    return await _status(rt, thread_id) == status


async def test_a_thread_runs_through_a_three_master_cluster(cluster_url, monkeypatch):
    settings = make_settings(
        cluster_url, f"fdc-{secrets.token_hex(3)}", partitions=4, default_agent="echo", max_attempts=1
    )
    recorder = Recorder(refuse_first=True)
    async with running(
        settings, agents=[EchoAgent(), FailingAgent(), StepsAgent()], channels=[recorder], builtins=False
    ) as rt:
        assert isinstance(rt.redis, RedisCluster)
        await rt.redis.initialize()  # learn the slots
        nodes = {rt.redis.get_node_from_key(rt.keys.inbound(p)).name for p in range(4)}
        assert len(nodes) >= 2, f"the partitions all landed on {nodes}"

        async with background(Worker(rt, "w1"), Worker(rt, "w2"), Outbox(rt, "o1")):
            ids = await _question_and_answer(rt, recorder, 6)
            for tid in ids:
                thread = await rt.store.load(tid)
                assert [e.type for e in thread.events if e.type != "delivery"] == [
                    "user_message",
                    "request_human_input",
                    "human_response",
                    "done_for_now",
                ]
                assert thread.events[-1].type in ("done_for_now", "delivery")
                assert recorder.texts(tid)[-1] == "ok: yes"

            # Launched (one script creates it), several model turns (each save queues the next), one answer.
            launched = await launch_thread(rt, "steps", "steps=3", Contact(channel="rec", address="ann"))
            await eventually(lambda: _status_is(rt, launched.id, "done"))
            await eventually(lambda: recorder.texts(launched.id) == ["done after 3 steps"])

            # A failing step is dead-lettered; a replay (a MULTI on the partition's slot) runs it again.
            broken = await rt.ingest.accept(_message("b1", "hi", "conv-broken"), "broken")
            await eventually(lambda: _status_is(rt, broken.thread_id, "failed"))

            async def dead_letters() -> list[tuple[int, str]]:
                return [
                    (p, entry_id)
                    for p, entry_id, fields in await rt.streams.dlq_entries()
                    if fields.get("t") == broken.thread_id
                ]

            # The thread is marked failed first, then the entry moves to the dead-letter stream
            # (Worker._dead_letter says why): wait for the second write, not just the first.
            await eventually(dead_letters)
            dead = await dead_letters()
            assert len(dead) == 1
            monkeypatch.setenv("TEST_BROKEN_FIXED", "1")
            assert await rt.streams.replay(*dead[0])
            await eventually(lambda: _status_is(rt, broken.thread_id, "done"))

        listed = {meta["id"] for meta in await rt.store.list(limit=100)}
        assert set(ids) | {broken.thread_id, launched.id} <= listed
        assert recorder.refused >= {m.id for m in recorder.sent}  # every message was retried once


async def test_the_rate_limit_is_per_sender_across_a_clusters_partitions(cluster_url):
    """The sender's window is on its own slot, counted by its own script; the partitions' scripts stay on theirs."""
    settings = make_settings(
        cluster_url, f"fdr-{secrets.token_hex(3)}", partitions=4, default_agent="echo", rate_limit=3, rate_window=60
    )
    async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
        assert rt.ingest.split
        await rt.redis.initialize()
        spread: dict[int, InboundMessage] = {}
        for i in range(1000):
            spread.setdefault(rt.keys.conversation_partition("rec", f"r{i}"), _message(f"r{i}", "hi", f"r{i}"))
        messages = [spread[p] for p in range(4)]
        nodes = {rt.redis.get_node_from_key(rt.keys.inbound(p)).name for p in range(4)}
        assert len(nodes) >= 2  # the conversations really are on different nodes
        outcomes = [await rt.ingest.accept(m, "echo") for m in messages]
        assert [a.limited for a in outcomes] == [False, False, False, True]
        # A provider's retry of an accepted message, inside the window: a duplicate, not counted, not refused.
        again = await rt.ingest.accept(messages[0], "echo")
        assert again.duplicate and again.thread_id == outcomes[0].thread_id
        assert await rt.redis.zcard(rt.keys.rate("rec", "ann")) == 3
        assert sum([await rt.redis.xlen(rt.keys.inbound(p)) for p in range(4)]) == 3


async def test_a_cluster_that_is_gone_reads_as_redis_down(tmp_path):
    """No node answers: the same error family as a single server that is down (503, retry)."""
    from helpers import free_port

    from gateway.errors import Unavailable
    from gateway.store.connection import make_client

    client = make_client(f"redis+cluster://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Unavailable):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_thread_runs_through_the_master_sentinel_names(tmp_path):
    with redis_sentinel(tmp_path, service="frontdesk") as (_, sentinel_port):
        url = f"redis+sentinel://127.0.0.1:{sentinel_port}/frontdesk/0"
        settings = make_settings(url, f"fds-{secrets.token_hex(3)}", partitions=2, default_agent="echo")
        recorder = Recorder()
        async with running(settings, agents=[EchoAgent()], channels=[recorder], builtins=False) as rt:
            async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                [tid] = await _question_and_answer(rt, recorder, 1)
            assert recorder.texts(tid) == ["you said 'hello 0'?", "ok: yes"]
