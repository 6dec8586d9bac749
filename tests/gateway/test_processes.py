"""Whole processes: `frontdesk dev`, `frontdesk worker` and the CLI as real subprocesses,
against a real Redis, delivering to a real HTTP sink on loopback.

Each test starts its own processes, stops them itself (killing by pid in a
`finally`), and bounds every wait; no assertion depends on how fast anything ran.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from aiohttp import web
from helpers import eventually, free_port

from channels.webhook import signature as webhook_signature
from gateway.events import InboundMessage
from gateway.runtime import running
from gateway.store.embedded import running_url
from gateway.store.keys import Keys

FRONTDESK = str(Path(sys.executable).with_name("frontdesk"))
REPO = Path(__file__).resolve().parents[2]
# Variables of the surrounding shell that would change what a child process does.
_OWN_PREFIXES = ("FRONTDESK_", "TEST_", "SLACK_", "TWILIO_", "OPENAI_", "ANTHROPIC_")


def child_env(**values) -> dict[str, str]:
    """The environment of a child `frontdesk`: the test plugins, JSON logs, and `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
    env.update(
        FRONTDESK_AGENTS="plugins:agents",
        FRONTDESK_CHANNELS="plugins:channels",
        FRONTDESK_MODEL="demo",
        FRONTDESK_LOG_FORMAT="json",
        FRONTDESK_SMTP_PORT=str(free_port()),
        TEST_SINK_URL="http://127.0.0.1:9/unused",
    )
    env.update({k: str(v) for k, v in values.items()})
    return env


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Proc:
    """A long-running `frontdesk` subprocess; its output goes to a file the test can read."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, name: str) -> None:
        self.log = cwd / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen([FRONTDESK, *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def up(self) -> bool:
        """Whether it has its signal handlers: a worker logs "starting" after installing them.

        A SIGTERM before that ends a starting process with the default action (-15), not a drain.
        """
        return '"starting"' in self.output()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    async def exited(self, timeout: float = 60) -> int:
        """The exit code, once the process has exited (`timeout` only bounds a hung process)."""
        await eventually(lambda: not self.alive(), timeout=timeout)
        return self.popen.wait()

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go: a failed test leaves nothing running."""
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.asynccontextmanager
async def frontdesk(tmp_path: Path, *args: str, env: dict[str, str], name: str = "proc") -> AsyncIterator[Proc]:
    proc = Proc(list(args), env, tmp_path, name)
    try:
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)
        data_dir = env.get("FRONTDESK_DATA_DIR")
        if data_dir and not env.get("FRONTDESK_REDIS_URL"):
            _stop_embedded(Path(data_dir))


def _stop_embedded(data_dir: Path) -> None:
    """Shut down an embedded server a killed `dev` left behind (only on a failed test)."""
    url = running_url(data_dir)
    if url:
        client = redis.Redis.from_url(url, socket_timeout=2)
        with contextlib.suppress(redis.RedisError):
            client.shutdown(nosave=True)
        client.close()


async def cli(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A one-shot `frontdesk` command, run without blocking the test's event loop (the sink lives there)."""
    return await asyncio.to_thread(
        subprocess.run, [FRONTDESK, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


class Sink:
    """A provider on loopback: records every message POSTed to it and answers as `answer` says.

    `answer(message, attempt)` returns (status, headers); `attempt` counts earlier posts
    of the same outbound id.
    """

    def __init__(self) -> None:
        self.posts: list[tuple[dict, int]] = []
        self.answer: Callable[[dict, int], tuple[int, dict[str, str]]] = lambda message, attempt: (200, {})

    async def handle(self, request: web.Request) -> web.Response:
        message = await request.json()
        attempt = sum(1 for m, _ in self.posts if m["id"] == message["id"])
        status, headers = self.answer(message, attempt)
        self.posts.append((message, status))
        return web.Response(status=status, headers={**headers, "x-message-id": f"sink-{len(self.posts)}"})

    def delivered(self) -> Counter:
        """Accepted posts per outbound id."""
        return Counter(m["id"] for m, status in self.posts if status < 300)

    def attempts(self, outbound_id: str) -> int:
        return sum(1 for m, _ in self.posts if m["id"] == outbound_id)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    recorder = Sink()
    app = web.Application()
    app.router.add_post("/", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield recorder, f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@pytest.fixture
async def rt(settings):
    """The test's own runtime on the same Redis and prefix as the children: to ingest and to read."""
    async with running(settings, builtins=False) as rt:
        yield rt


def worker_env(settings, sink_url: str, **values) -> dict[str, str]:
    defaults = dict(
        FRONTDESK_REDIS_URL=settings.redis_url,
        FRONTDESK_KEY_PREFIX=settings.key_prefix,
        FRONTDESK_CLAIM_TIMEOUT=1,
        FRONTDESK_SHUTDOWN_GRACE=5,
        FRONTDESK_RETRY_BASE=0.05,
        FRONTDESK_RETRY_MAX=0.2,
        TEST_SINK_URL=sink_url,
    )
    return child_env(**{**defaults, **values})


def said(i: int, text: str) -> InboundMessage:
    """A message on the sink channel: the thread's answers go back to the sink."""
    return InboundMessage(id=f"in-{i}", channel="test", conversation=f"conv-{i}", sender="tester", text=text)


def steps_expected(n: int) -> list[tuple[str, str | None]]:
    """(type, call_id) of a `steps=n` thread whose final message was delivered."""
    tools = [(kind, f"c{i}") for i in range(n) for kind in ("tool_call", "tool_result")]
    return [("user_message", None), *tools, ("done_for_now", None), ("delivery", None)]


def shape(thread) -> list[tuple[str, str | None]]:
    return [(e.type, getattr(e, "call_id", None)) for e in thread.events]


async def all_status(rt, ids: list[str], status: str) -> bool:
    for tid in ids:
        if (await rt.store.meta(tid)).get("status") != status:
            return False
    return True


async def delivered_all(rt, ids: list[str]) -> bool:
    for tid in ids:
        thread = await rt.store.load(tid)
        if thread is None or thread.status != "done" or thread.events[-1].type != "delivery":
            return False
    return True


async def progressed(rt, ids: list[str], steps: int) -> bool:
    """Whether one of `ids` has saved at least `steps` tool steps."""
    for tid in ids:
        thread = await rt.store.load(tid)
        if thread is not None and sum(e.type == "tool_result" for e in thread.events) >= steps:
            return True
    return False


async def check_delivered_once(rt, sink: Sink, ids: list[str], steps: int) -> None:
    finals = {f"{tid}-{2 * steps + 1}" for tid in ids}
    for tid in ids:
        thread = await rt.store.load(tid)
        assert shape(thread) == steps_expected(steps), (tid, shape(thread))
        assert thread.events[-1].status == "sent"
    delivered = sink.delivered()
    assert set(delivered) == finals
    assert all(count == 1 for count in delivered.values()), delivered


# ---------------------------------------------------------------- frontdesk dev


async def test_dev_runs_everything_on_an_embedded_redis_and_keeps_it(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    env = child_env(FRONTDESK_DATA_DIR=data_dir, FRONTDESK_HTTP_PORT=port)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        async with frontdesk(tmp_path, "dev", env=env, name="dev1") as dev:
            await _healthy(http, dev)
            await eventually(lambda: "scripted demo model" in dev.output(), timeout=10)
            r = await http.post("/api/v1/threads", json={"agent": "echo", "text": "hello from the test"})
            assert r.status_code == 201, r.text
            tid = r.json()["id"]

            async def asked() -> bool:
                r = await http.get(f"/api/v1/threads/{tid}")
                return r.json()["status"] == "waiting_human"

            await eventually(asked, timeout=20)  # the dev process's own worker took the step

            # A second process finds the server dev runs rather than starting its own.
            listed = await cli(tmp_path, "threads", "list", "--json", env=env)
            assert listed.returncode == 0, listed.stderr
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            assert [(row["id"], row["status"], row["agent"]) for row in rows] == [(tid, "waiting_human", "echo")]

            redis_port = urlsplit((data_dir / "redis.url").read_text()).port
            assert listening(redis_port)
            dev.signal(signal.SIGTERM)
            assert await dev.exited() == 0, dev.output()
        # dev stopped the redis-server it started.
        assert not listening(redis_port)
        assert not (data_dir / "redis.url").exists()

        # Without dev, the command starts the embedded server on the same data (its AOF) and stops it.
        shown = await cli(tmp_path, "threads", "show", tid, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "request_human_input" in shown.stdout and "hello from the test" in shown.stdout
        assert not (data_dir / "redis.url").exists()

        async with frontdesk(tmp_path, "dev", env=env, name="dev2") as dev:
            await _healthy(http, dev)
            r = await http.get(f"/api/v1/threads/{tid}")
            assert r.status_code == 200
            assert [e["type"] for e in r.json()["events"]] == ["user_message", "request_human_input"]
            dev.signal(signal.SIGTERM)
            assert await dev.exited() == 0, dev.output()


async def test_a_second_signal_exits_dev_at_once_and_still_stops_its_redis(tmp_path):
    data_dir, port = tmp_path / "data", free_port()
    # A long grace and a step in flight that takes far longer: the first SIGTERM waits on it.
    env = child_env(
        FRONTDESK_DATA_DIR=data_dir, FRONTDESK_HTTP_PORT=port, FRONTDESK_SHUTDOWN_GRACE=120, TEST_STEP_DELAY=60
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        async with frontdesk(tmp_path, "dev", env=env, name="dev") as dev:
            await _healthy(http, dev)
            tid = (await http.post("/api/v1/threads", json={"agent": "steps", "text": "steps=1000"})).json()["id"]
            redis_url = (data_dir / "redis.url").read_text()
            lease = Keys("frontdesk", 1).lease(tid)
            client = redis.Redis.from_url(redis_url)
            try:
                # A worker holds the thread's lease while its (sixty-second) step runs.
                await eventually(lambda: client.exists(lease), timeout=20)
            finally:
                client.close()
            dev.signal(signal.SIGTERM)
            await eventually(lambda: "draining" in dev.output(), timeout=20)
            dev.signal(signal.SIGTERM)
            assert await dev.exited() == 128 + signal.SIGTERM, dev.output()
            assert "exiting at once" in dev.output()
        assert not listening(urlsplit(redis_url).port)


async def test_with_redis_down_dev_stays_up_answers_503_and_stops_cleanly(tmp_path):
    port = free_port()
    env = child_env(FRONTDESK_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", FRONTDESK_HTTP_PORT=port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        async with frontdesk(tmp_path, "dev", env=env, name="dev") as dev:
            await _healthy(http, dev)
            assert (await http.get("/readyz")).status_code == 503
            r = await http.post("/api/v1/threads", json={"agent": "echo", "text": "hello"})
            assert r.status_code == 503 and r.headers["retry-after"]
            await eventually(lambda: "redis unavailable; retrying" in dev.output(), timeout=20)
            assert dev.alive()
            dev.signal(signal.SIGTERM)
            assert await dev.exited() == 0, dev.output()


async def _healthy(http: httpx.AsyncClient, proc: Proc) -> None:
    async def up() -> bool:
        assert proc.alive(), proc.output()
        try:
            return (await http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(up, timeout=30, interval=0.1)


# ---------------------------------------------------------------- killed and stopped workers


async def _kill_mid_step(tmp_path, rt, settings, sink, *, threads: int, steps: int, rounds: int, workers: int) -> None:
    recorder, url = sink
    env = worker_env(settings, url, TEST_STEP_DELAY=0.3)
    ids = [(await rt.ingest.accept(said(i, f"steps={steps}"), "steps")).thread_id for i in range(threads)]
    procs = [Proc(["worker"], env, tmp_path, f"w{i}") for i in range(workers)]
    try:
        for round_ in range(rounds):
            # Kill while every thread is still stepping: its unsaved step must be redone, once.
            target = 2 * (round_ + 1)
            await eventually(lambda: progressed(rt, ids, target), timeout=60)
            victim = procs[round_ % len(procs)]
            victim.kill()
            procs[round_ % len(procs)] = Proc(["worker"], env, tmp_path, f"w{workers + round_}")
        await eventually(lambda: delivered_all(rt, ids), timeout=120, interval=0.1)
        await check_delivered_once(rt, recorder, ids, steps)
    finally:
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.to_thread(proc.stop)


async def test_a_worker_killed_mid_step_loses_and_repeats_nothing(tmp_path, rt, settings, sink):
    await _kill_mid_step(tmp_path, rt, settings, sink, threads=3, steps=6, rounds=1, workers=1)


@pytest.mark.slow
async def test_chaos_workers_killed_again_and_again(tmp_path, rt, settings, sink):
    await _kill_mid_step(tmp_path, rt, settings, sink, threads=40, steps=20, rounds=8, workers=2)


async def test_sigterm_lets_a_worker_stop_cleanly_and_loses_nothing(tmp_path, rt, settings, sink):
    recorder, url = sink
    # The threads need longer than the grace period: the drain cancels steps in flight.
    env = worker_env(settings, url, TEST_STEP_DELAY=0.3, FRONTDESK_SHUTDOWN_GRACE=1)
    ids = [(await rt.ingest.accept(said(i, "steps=10"), "steps")).thread_id for i in range(3)]
    async with frontdesk(tmp_path, "worker", env=env, name="w1") as first:
        await eventually(lambda: progressed(rt, ids, 1), timeout=30)
        first.signal(signal.SIGTERM)
        assert await first.exited() == 0, first.output()
        logs = first.output()
        assert "stopping" in logs and "exiting at once" not in logs
    async with frontdesk(tmp_path, "worker", env=env, name="w2") as second:
        await eventually(lambda: delivered_all(rt, ids), timeout=60, interval=0.1)
        second.signal(signal.SIGTERM)
        assert await second.exited() == 0, second.output()
    await check_delivered_once(rt, recorder, ids, 10)


async def test_a_worker_fires_cron_and_answers_probes_on_the_ops_port(tmp_path, rt, settings, sink):
    _, url = sink
    (tmp_path / "frontdesk.toml").write_text(
        '[[cron]]\nname = "minutely"\nschedule = "* * * * *"\nagent = "echo"\ntext = "cron says hi"\n'
    )
    ops = free_port()
    env = worker_env(settings, url, FRONTDESK_OPS_PORT=ops, FRONTDESK_CONFIG=tmp_path / "frontdesk.toml")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops}", timeout=5) as http:
        async with frontdesk(tmp_path, "worker", env=env, name="w1") as worker:
            await _healthy(http, worker)
            assert (await http.get("/readyz")).status_code == 200

            async def fired() -> list:
                return [
                    m
                    for m in await rt.store.list()
                    if m.get("channel") == "cron" and m.get("status") == "waiting_human"
                ]

            # A scheduler that starts fires the latest tick of the last FRONTDESK_CRON_GRACE seconds.
            (meta,) = await eventually(fired, timeout=30)
            assert meta["agent"] == "echo"
            assert "frontdesk_steps_total" in (await http.get("/metrics")).text
            worker.signal(signal.SIGTERM)
            assert await worker.exited() == 0, worker.output()


# ---------------------------------------------------------------- dead letters through the CLI


async def test_dead_letters_are_listed_and_replayed_through_the_cli(tmp_path, rt, settings, sink):
    _, url = sink
    env = worker_env(settings, url, FRONTDESK_MAX_ATTEMPTS=2)
    launched = await cli(tmp_path, "launch", "broken", "please work", env=env)
    assert launched.returncode == 0, launched.stderr
    tid = launched.stdout.strip()
    async with frontdesk(tmp_path, "worker", env=env, name="w1") as worker:
        await eventually(lambda: all_status(rt, [tid], "failed"), timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.exited() == 0, worker.output()

    listed = await cli(tmp_path, "dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 1
    assert rows[0]["thread_id"] == tid and rows[0]["source"] == "inbound" and "agent bug" in rows[0]["reason"]
    human = await cli(tmp_path, "dlq", "list", env=env)
    assert human.stdout.startswith(rows[0]["id"])

    # The fix is deployed (the agent works now); the replayed entry completes the thread.
    fixed = {**env, "TEST_BROKEN_FIXED": "1"}
    async with frontdesk(tmp_path, "worker", env=fixed, name="w2") as worker:
        replayed = await cli(tmp_path, "dlq", "replay", rows[0]["id"], env=fixed)
        assert replayed.returncode == 0, replayed.stderr
        await eventually(lambda: all_status(rt, [tid], "done"), timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.exited() == 0, worker.output()
    thread = await rt.store.load(tid)
    # The replay is on the thread, by whom, before the step it replayed (as an API replay is).
    assert [e.type for e in thread.events] == ["user_message", "error", "note", "done_for_now"]
    assert thread.events[2].kind == "replay" and thread.events[2].sender == "cli"
    assert (await cli(tmp_path, "dlq", "list", env=env)).stdout == ""


# ---------------------------------------------------------------- outbound failures


async def test_failing_deliveries_are_dead_lettered_and_rate_limits_honoured(tmp_path, rt, settings, sink):
    recorder, url = sink
    broken_sink = True

    def answer(message: dict, attempt: int) -> tuple[int, dict[str, str]]:
        if "fail500" in message["text"]:
            return (500, {}) if broken_sink else (200, {})
        if "ratelimit" in message["text"] and attempt == 0:
            return 429, {"Retry-After": "1"}
        return 200, {}

    recorder.answer = answer
    env = worker_env(settings, url, FRONTDESK_DELIVERY_ATTEMPTS=2)
    failing = (await rt.ingest.accept(said(1, "fail500"), "echo")).thread_id
    limited = (await rt.ingest.accept(said(2, "ratelimit"), "echo")).thread_id
    async with frontdesk(tmp_path, "worker", env=env, name="w1") as worker:
        await eventually(lambda: all_status(rt, [failing], "failed"), timeout=30)
        await eventually(lambda: _delivery(rt, limited, "sent"), timeout=30)

        thread = await rt.store.load(failing)
        assert [e.type for e in thread.events] == ["user_message", "request_human_input", "delivery"]
        assert thread.events[-1].status == "failed" and "500" in thread.events[-1].detail
        assert recorder.attempts(f"{failing}-1") == 2  # FRONTDESK_DELIVERY_ATTEMPTS
        assert recorder.attempts(f"{limited}-1") == 2 and recorder.delivered()[f"{limited}-1"] == 1
        thread = await rt.store.load(limited)
        assert [e.type for e in thread.events] == ["user_message", "request_human_input", "delivery"]
        assert thread.status == "waiting_human"

        listed = await cli(tmp_path, "dlq", "list", "--json", env=env)
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [(r["source"], r["kind"], r["thread_id"]) for r in rows] == [("outbox", "outbound", failing)]

        # The provider recovers; the replayed message is delivered and the thread waits again.
        broken_sink = False
        replayed = await cli(tmp_path, "dlq", "replay", "--all", env=env)
        assert replayed.returncode == 0 and "replayed 1" in replayed.stdout, replayed.stderr
        await eventually(lambda: all_status(rt, [failing], "waiting_human"), timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.exited() == 0, worker.output()
    assert recorder.delivered()[f"{failing}-1"] == 1
    thread = await rt.store.load(failing)
    assert [(e.type, getattr(e, "status", None)) for e in thread.events[2:]] == [
        ("delivery", "failed"),
        ("note", None),  # `dlq replay --all` says so on the thread, as the API's retry does
        ("delivery", "sent"),
    ]
    assert thread.events[3].kind == "delivery_retry" and thread.events[3].sender == "cli"


async def _delivery(rt, tid: str, status: str) -> bool:
    thread = await rt.store.load(tid)
    return thread is not None and any(e.type == "delivery" and e.status == status for e in thread.events)


# ---------------------------------------------------------------- serve --workers: several processes, one port

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()


def _webhook(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"text": f"hello {i}", "conversation": f"prefork-{i}"}).encode()
    ts = int(time.time())
    return body, {
        "content-type": "application/json",
        "webhook-id": f"prefork-msg-{i}",
        "webhook-timestamp": str(ts),
        "webhook-signature": webhook_signature(WEBHOOK_SECRET, f"prefork-msg-{i}", ts, body),
    }


def _fresh_connections(base: str) -> httpx.AsyncClient:
    """Each request on a new connection, so the kernel hands each to whichever process accepts it."""
    return httpx.AsyncClient(base_url=base, timeout=5, limits=httpx.Limits(max_keepalive_connections=0))


async def _pids_answering(http: httpx.AsyncClient, proc: Proc, want: int) -> set[int]:
    await _healthy(http, proc)
    pids: set[int] = set()

    async def all_answered() -> bool:
        pids.add((await http.get("/healthz")).json()["pid"])
        return len(pids) >= want

    await eventually(all_answered, timeout=30, interval=0.01)
    return pids


async def test_serve_workers_share_one_port_ingest_once_and_drain_on_sigterm(tmp_path, rt, settings, sink):
    _, url = sink
    port = free_port()
    env = worker_env(settings, url, FRONTDESK_HTTP_PORT=port, FRONTDESK_WEBHOOK_SECRET=WEBHOOK_SECRET)
    async with _fresh_connections(f"http://127.0.0.1:{port}") as http:
        async with frontdesk(tmp_path, "serve", "--workers", "2", env=env, name="serve") as serve:
            pids = await _pids_answering(http, serve, 2)
            assert serve.pid not in pids  # the children answer; the parent only supervises

            # Each message posted twice (a provider's retry), each copy to whichever process takes it.
            ids: dict[int, str] = {}
            for i in range(20):
                body, headers = _webhook(i)
                first, again = [await http.post("/webhooks/echo", content=body, headers=headers) for _ in range(2)]
                assert first.status_code == again.status_code == 202, (first.text, again.text)
                assert first.json()["thread_id"] == again.json()["thread_id"]
                ids[i] = first.json()["thread_id"]
            assert len(set(ids.values())) == 20

            async with frontdesk(tmp_path, "worker", env=env, name="worker") as worker:
                await eventually(lambda: all_status(rt, list(ids.values()), "waiting_human"), timeout=30)
                worker.signal(signal.SIGTERM)
                assert await worker.exited() == 0, worker.output()
            for i, tid in ids.items():
                thread = await rt.store.load(tid)
                assert [e.type for e in thread.events] == ["user_message", "request_human_input"], tid
                assert thread.events[0].text == f"hello {i}"

            serve.signal(signal.SIGTERM)
            assert await serve.exited() == 0, serve.output()
            logs = serve.output()
            assert logs.count('"http process stopped"') == 2 and "exiting at once" not in logs
            assert all(not _alive(pid) for pid in pids)
            assert not listening(port)


async def test_serve_workers_stop_all_and_fail_when_one_process_dies(tmp_path, settings, sink):
    _, url = sink
    port = free_port()
    env = worker_env(settings, url, FRONTDESK_HTTP_PORT=port)
    async with _fresh_connections(f"http://127.0.0.1:{port}") as http:
        async with frontdesk(tmp_path, "serve", "--workers", "2", env=env, name="serve") as serve:
            killed, other = sorted(await _pids_answering(http, serve, 2))
            os.kill(killed, signal.SIGKILL)  # what an OOM kill does
            # Not restarted in the container: the others drain, and the exit code tells the kubelet.
            assert await serve.exited() == 128 + signal.SIGKILL, serve.output()
            logs = serve.output()
            assert '"http process died; stopping the others"' in logs and f'"pid": {killed}' in logs
            assert not _alive(other)
            assert not listening(port)


async def test_serve_workers_on_a_taken_port_fail_once_naming_the_setting(tmp_path, settings, sink):
    _, url = sink
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = worker_env(settings, url, FRONTDESK_HTTP_PORT=taken.getsockname()[1])
        done = await cli(tmp_path, "serve", "--workers", "2", env=env)
    assert done.returncode == 2, done.stderr
    assert "FRONTDESK_HTTP_HOST/FRONTDESK_HTTP_PORT: cannot listen" in done.stderr
    assert "http processes started" not in done.stdout  # the parent bound first: no child was forked


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (it is the serve process's child, reaped by it: not a zombie of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
