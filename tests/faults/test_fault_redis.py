"""Redis restarts under load: nothing acknowledged to a provider is lost, and no process exits.

The test runs its own redis-server (append-only file on) on a fixed port, a
`frontdesk dev` (HTTP, SMTP, worker, outbox) and a second `frontdesk worker`
against it, and keeps signed webhooks, API launches and mail coming while Redis
goes away and comes back. A request Redis could not take gets 503 with
Retry-After (HTTP) or 451 (SMTP) and is sent again, as a provider would.

Two ways down: SHUTDOWN (Redis fsyncs its append-only file first; the default
`appendfsync everysec` loses nothing) and kill -9. After a kill -9, `everysec`
may lose up to about a second of writes Redis had already answered — a webhook
we acknowledged among them — so that case runs with `appendfsync always`, the
setting the promise needs when Redis itself can crash (a replica or a managed
Redis with its own durability does the same job).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest
from aiosmtpd.smtp import SMTP
from faultctl import RedisServer, free_port
from helpers import background, eventually, make_settings
from plugins import SinkChannel, StepsAgent
from test_processes import Proc, child_env

from channels.webhook import signature
from gateway.events import InboundMessage
from gateway.runtime import running
from gateway.worker import Worker

SECRET = "whsec_" + base64.b64encode(b"r" * 32).decode()
KINDS = ("webhook", "api", "mail")


@dataclass
class Load:
    """Requests sent, acknowledged and refused, per kind; what each acknowledged one said."""

    sent: Counter = field(default_factory=Counter)
    acked: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})  # kind -> texts
    refused: Counter = field(default_factory=Counter)  # 503 / 451 answers
    refused_without_retry_after: int = 0
    errors: Counter = field(default_factory=Counter)  # no answer at all (connection failed)
    ids: dict[str, str] = field(default_factory=dict)  # text -> thread id the answer named
    launched_twice: int = 0  # API launches (no idempotency key) whose refused try had in fact landed

    def line(self) -> str:
        parts = [
            f"{k}: sent={self.sent[k]} acked={len(self.acked[k])} refused={self.refused[k]} errors={self.errors[k]}"
            for k in KINDS
        ]
        return "; ".join(parts) + f"; api launched twice={self.launched_twice}"


class Relay:
    """The outbound relay: accepts every mail (the echo agent answers mail by mail)."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received += 1
        return "250 2.0.0 OK"


@contextlib.asynccontextmanager
async def relay():
    loop = asyncio.get_running_loop()
    handler = Relay()
    server = await loop.create_server(lambda: SMTP(handler, hostname="relay.test", loop=loop), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _webhook(http: httpx.AsyncClient, load: Load, i: int) -> bool:
    text = f"hook-{i}"
    body = json.dumps({"text": text}).encode()
    stamp = int(time.time())
    headers = {"content-type": "application/json", "webhook-id": f"wh-{i}", "webhook-timestamp": str(stamp)}
    headers["webhook-signature"] = signature(SECRET, f"wh-{i}", stamp, body)
    r = await http.post("/webhooks/echo", content=body, headers=headers)
    return _answered(load, "webhook", text, r, 202)


async def _launch(http: httpx.AsyncClient, load: Load, i: int) -> bool:
    text = f"api-{i}"
    r = await http.post("/api/v1/threads", json={"agent": "echo", "text": text})
    return _answered(load, "api", text, r, 201)


def _answered(load: Load, kind: str, text: str, r: httpx.Response, ok: int) -> bool:
    if r.status_code == 503:
        load.refused[kind] += 1
        load.refused_without_retry_after += "retry-after" not in r.headers
        return False
    assert r.status_code == ok, (kind, r.status_code, r.text)
    load.acked[kind].append(text)
    load.ids[text] = r.json().get("thread_id") or r.json()["id"]
    return True


async def _mail(smtp_port: int, load: Load, i: int) -> bool:
    text = f"mail-{i}"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "alice@example.com", "echo@frontdesk.localhost", f"load {i}"
    mail["Message-ID"] = f"<mail-{i}@example.com>"
    mail.set_content(text)
    try:
        await aiosmtplib.send(mail, hostname="127.0.0.1", port=smtp_port, timeout=30)
    except aiosmtplib.SMTPResponseException as exc:
        assert exc.code == 451, (exc.code, exc.message)
        load.refused["mail"] += 1
        return False
    load.acked["mail"].append(text)
    return True


async def _client(kind: str, numbers, send, load: Load, stop: asyncio.Event) -> None:
    """Send one request after another; a refused one again (sooner than Retry-After: a test)."""
    while not stop.is_set():
        i = next(numbers)
        while True:
            load.sent[kind] += 1
            try:
                if await send(load, i):
                    break
            except (httpx.TransportError, aiosmtplib.SMTPException, OSError) as exc:
                load.errors[kind] += 1
                print(f"{kind} {i}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.1)


async def _healthy(http: httpx.AsyncClient, proc: Proc) -> bool:
    assert proc.alive(), proc.output()
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _restart_under_load(
    tmp_path, prefix, *, kill: bool, fsync: str, per_kind: int, down: float = 0.0
) -> tuple[Load, int]:
    """Load, take Redis down (SHUTDOWN or kill -9) for `down` seconds more, start it again; (load, acknowledged but lost)."""
    load, port = Load(), free_port()
    with RedisServer(tmp_path / "redis", fsync=fsync) as server:
        settings = make_settings(server.url, prefix, rate_limit=0)
        async with relay() as relay_port:
            env = child_env(
                FRONTDESK_REDIS_URL=server.url,
                FRONTDESK_KEY_PREFIX=prefix,
                FRONTDESK_HTTP_PORT=port,
                FRONTDESK_WEBHOOK_SECRET=SECRET,
                FRONTDESK_SMTP_RELAY=f"127.0.0.1:{relay_port}",
                FRONTDESK_RATE_LIMIT=0,
                FRONTDESK_CLAIM_TIMEOUT=1,
                FRONTDESK_RETRY_BASE=0.05,
                FRONTDESK_RETRY_MAX=0.5,
            )
            smtp_port = int(env["FRONTDESK_SMTP_PORT"])
            dev = Proc(["dev"], env, tmp_path, "dev")
            worker = Proc(["worker"], env, tmp_path, "worker")
            stop = asyncio.Event()
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                    await eventually(lambda: _healthy(http, dev), timeout=60, interval=0.1)
                    await eventually(lambda: '"starting"' in worker.output(), timeout=60)
                    numbers = itertools.count()
                    clients = [
                        asyncio.create_task(
                            _client("webhook", numbers, lambda load, i: _webhook(http, load, i), load, stop)
                        ),
                        asyncio.create_task(
                            _client("api", numbers, lambda load, i: _launch(http, load, i), load, stop)
                        ),
                        asyncio.create_task(
                            _client("mail", numbers, lambda load, i: _mail(smtp_port, load, i), load, stop)
                        ),
                    ]
                    try:
                        await eventually(lambda: all(len(load.acked[k]) >= per_kind for k in KINDS), timeout=60)
                        await asyncio.to_thread(server.kill if kill else server.shutdown)
                        # Down: every kind is refused (not dropped, not hung) until Redis is back.
                        await eventually(lambda: all(load.refused[k] >= 2 for k in KINDS), timeout=60)
                        await eventually(lambda: '"redis unavailable; retrying"' in worker.output(), timeout=30)
                        await asyncio.sleep(down)  # a longer outage: more refusals, more reconnect attempts
                        before = {k: len(load.acked[k]) for k in KINDS}
                        await asyncio.to_thread(server.start)
                        await eventually(
                            lambda: all(len(load.acked[k]) >= before[k] + per_kind for k in KINDS), timeout=60
                        )
                    finally:
                        stop.set()
                        await asyncio.gather(*clients)
                    assert dev.alive() and worker.alive(), (dev.output(), worker.output())
                    async with running(settings, builtins=False) as rt:
                        # Every process carried on: the workers apply all there is; then whatever
                        # was acknowledged has its thread, and the echo agent has asked back.
                        await eventually(lambda: _idle(rt), timeout=120, interval=0.2)
                        lost = await _lost(rt, load)
                        await eventually(lambda: _all_asked(rt, load), timeout=60, interval=0.2)
                for proc in (dev, worker):
                    proc.signal(signal.SIGTERM)
                    assert await proc.exited() == 0, proc.output()
            finally:
                dev.kill()
                worker.kill()
    return load, lost


async def _idle(rt) -> bool:
    """Nothing left on the inbound stream that a worker has not applied."""
    found = await rt.streams.backlog(rt.keys.inbound(0), "workers")
    return found == (0, 0)


async def _texts(rt) -> Counter:
    """How many threads began with each text."""
    said: Counter = Counter()
    for meta in await rt.store.list(limit=100_000):
        thread = await rt.store.load(meta["id"])
        said.update(e.text.strip() for e in thread.events[:1] if e.type == "user_message")
    return said


async def _lost(rt, load: Load) -> int:
    """Acknowledged requests with no thread; a webhook or mail begins exactly one."""
    said = await _texts(rt)
    lost = sum(said[text] == 0 for kind in KINDS for text in load.acked[kind])
    load.launched_twice = sum(said[text] > 1 for text in load.acked["api"])
    for kind in ("webhook", "mail"):  # deduplicated by webhook-id / Message-ID
        assert all(said[text] <= 1 for text in load.acked[kind]), [t for t in load.acked[kind] if said[t] > 1]
    return lost


async def _all_asked(rt, load: Load) -> bool:
    """Every acknowledged request's thread has had its step (the echo agent asks back)."""
    wanted = {text for kind in KINDS for text in load.acked[kind]}
    asked = set()
    for meta in await rt.store.list(limit=100_000):
        thread = await rt.store.load(meta["id"])
        if (
            thread.events
            and thread.events[0].type == "user_message"
            and any(e.type == "request_human_input" for e in thread.events)
        ):
            asked.add(thread.events[0].text.strip())
    return wanted <= asked


def _check(load: Load, lost: int) -> None:
    print(f"\nredis restart: {load.line()}; acknowledged but lost={lost}")
    assert lost == 0, load.line()
    assert load.refused_without_retry_after == 0


async def test_redis_shutdown_and_restart_under_load_loses_nothing_acknowledged(tmp_path, prefix):
    _check(*await _restart_under_load(tmp_path, prefix, kill=False, fsync="everysec", per_kind=3))


@pytest.mark.slow
async def test_chaos_redis_killed_under_load_with_appendfsync_always_loses_nothing(tmp_path, prefix):
    _check(*await _restart_under_load(tmp_path, prefix, kill=True, fsync="always", per_kind=40, down=3))


@pytest.mark.slow
async def test_chaos_redis_killed_with_appendfsync_everysec_is_measured(tmp_path, prefix):
    """Not a promise: how much a kill -9 with the default fsync policy can lose (printed)."""
    load, lost = await _restart_under_load(tmp_path, prefix, kill=True, fsync="everysec", per_kind=40, down=3)
    print(f"\nredis kill -9 with appendfsync everysec: {load.line()}; acknowledged but lost={lost}")


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="known gap: a Redis that crashes and is back within redis-py's connection retries (~0.7 s) "
    "runs a write script twice when its answer was lost; the save script then appends a step twice",
)
async def test_chaos_redis_crashing_and_back_at_once_applies_no_step_twice(tmp_path, prefix):
    """kill -9 and an immediate restart (appendfsync always), again and again, under steady steps."""
    with RedisServer(tmp_path / "redis", fsync="always") as server:
        settings = make_settings(server.url, prefix, rate_limit=0)
        async with running(
            settings, builtins=False, agents=[StepsAgent(delay=0.01)], channels=[SinkChannel("http://127.0.0.1:9/")]
        ) as rt:
            start = [
                InboundMessage(id=f"s{i}", channel="api", conversation=f"c{i}", sender="t", text="steps=60")
                for i in range(40)
            ]
            ids = [(await rt.ingest.accept(message, "steps")).thread_id for message in start]
            async with background(Worker(rt, "w1")):
                for _ in range(15):
                    await asyncio.sleep(0.5)
                    await asyncio.to_thread(server.kill)
                    await asyncio.to_thread(server.start)
                await eventually(lambda: _all_done(rt, ids), timeout=120, interval=0.5)
            repeated = 0
            for tid in ids:
                thread = await rt.store.load(tid)
                steps = Counter(e.call_id for e in thread.events if e.type == "tool_result")
                repeated += sum(n - 1 for n in steps.values())
    print(f"\nredis crash + immediate restart x15: steps applied twice={repeated}")
    assert repeated == 0


async def _all_done(rt, ids: list[str]) -> bool:
    for tid in ids:
        if (await rt.store.meta(tid)).get("status") != "done":
            return False
    return True
