"""The test's side of the fault tests: the outside world on loopback, and a Redis to restart.

`Control` is one HTTP server in the test's event loop playing everything a
worker talks to outside Redis: the model (Chat Completions, answering from a
small script read off the rendered context), the work service the agent's tool
calls, and the person's inbox the test channel delivers to. A test *arms* a
point (`model`, `tool`, `send`); the next request reaching it is held without an
answer and reported with the pid of the process that made it, so the test can
kill that process exactly there. `RedisServer` is a redis-server of the test's
own (append-only file on), on a port that stays the same across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from aiohttp import web
from faultkit import PID_HEADER
from helpers import free_port

from agents.kit import Block, parse_blocks
from gateway.store.embedded import redis_executable

# The process helpers of tests/gateway/test_processes.py (Proc, child_env) serve here too.
FAULTS = Path(__file__).resolve().parent
if str(FAULTS.parent / "gateway") not in sys.path:
    sys.path.append(str(FAULTS.parent / "gateway"))
from test_processes import REPO, child_env  # noqa: E402

POINTS = ("model", "tool", "send")


@dataclass(frozen=True)
class Hit:
    """A request that reached an armed point: which process made it, for which thread."""

    point: str
    pid: int
    thread: str
    after: str = ""  # for the model: the last block it was shown (tool_result: a `continue` turn)


@dataclass
class _Trap:
    match: Callable[[Hit], bool]
    future: asyncio.Future


def params(text: str) -> dict[str, str]:
    """`key=value` words of a text (how a test tells the scripted model what to do)."""
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def script(blocks: list[Block]) -> tuple[str, dict[str, Any]]:
    """The next step of a `run=R steps=S ask=A` thread: S tool steps, a question after A, done."""
    first = next(b for b in blocks if b.tag == "user_message")
    want = params(first.body)
    steps, ask = int(want.get("steps", 3)), int(want.get("ask", -1))
    done = sum(b.tag == "tool_result" for b in blocks)
    if done == ask and not any(b.tag == "request_human_input" for b in blocks):
        return "request_human_input", {"question": f"run {want.get('run')}: carry on?"}
    if done < steps:
        return "work", {"n": done}
    return "done_for_now", {"message": f"run {want.get('run')}: done after {done} steps"}


def completion(
    name: str | None, arguments: str | dict | None = None, *, model: str = "fault", text: str | None = None
) -> dict:
    """A Chat Completions answer with one tool call (none when `name` is None)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if name is not None:
        args = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        message["tool_calls"] = [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}]
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "tool_calls" if name else "stop", "message": message}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


# An async rule a test may install for the model: given the request's blocks and body,
# an answer of its own (a 429, garbage, a hang) or None for the script's answer.
ModelRule = Callable[[list[Block], dict], Awaitable[web.StreamResponse | None]]


class Control:
    """Model, work service and inbox on 127.0.0.1 port 0, with points a test can arm."""

    def __init__(self, *, model_delay: float = 0.0, tool_delay: float = 0.0) -> None:
        self.model_delay = model_delay
        self.tool_delay = tool_delay
        self.model_rule: ModelRule | None = None
        self.model_requests: list[tuple[str, int]] = []  # (thread, pid)
        self.tool_calls: Counter[tuple[str, int]] = Counter()  # (thread, n) -> calls
        self.inbox: list[tuple[dict, int]] = []  # (outbound message, pid) the person received
        self._traps: dict[str, _Trap] = {}
        self._held: list[asyncio.Event] = []
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._model)
        app.router.add_post("/tool", self._tool)
        app.router.add_post("/inbox", self._inbox)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        self.url = ""

    async def __aenter__(self) -> Control:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()
        await self._runner.cleanup()

    # ------------------------------------------------------------ the test's handle
    def arm(self, point: str, match: Callable[[Hit], bool] = lambda hit: True) -> asyncio.Future:
        """A future set with the Hit of the next request at `point` that `match` accepts."""
        assert point in POINTS and point not in self._traps
        future = asyncio.get_running_loop().create_future()
        self._traps[point] = _Trap(match, future)
        return future

    def disarm(self) -> None:
        for trap in self._traps.values():
            trap.future.cancel()
        self._traps.clear()

    def release(self) -> None:
        """Let every held request end (its process is gone by now)."""
        for held in self._held:
            held.set()
        self._held.clear()

    async def hold(self) -> web.Response:
        """Take the request and never answer it (until released): the caller times out or dies."""
        held = asyncio.Event()
        self._held.append(held)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(held.wait(), 120)
        return web.Response(status=503)

    def received(self) -> Counter:
        """How many times the person received each outbound id."""
        return Counter(message["id"] for message, _ in self.inbox)

    # ------------------------------------------------------------ handlers
    def _caught(self, hit: Hit) -> bool:
        trap = self._traps.get(hit.point)
        if trap is None or not trap.match(hit) or trap.future.done():
            return False
        del self._traps[hit.point]
        trap.future.set_result(hit)
        return True

    async def _model(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        system, context = body["messages"][0]["content"], body["messages"][-1]["content"]
        pid = int(re.search(r"worker-pid: (\d+)", system).group(1))
        thread = re.search(r"thread: (\S+)", system).group(1)
        self.model_requests.append((thread, pid))
        blocks = parse_blocks(context)
        if self._caught(Hit("model", pid, thread, blocks[-1].tag if blocks else "")):
            return await self.hold()
        if self.model_delay:
            await asyncio.sleep(self.model_delay)
        if self.model_rule is not None:
            answer = await self.model_rule(blocks, body)
            if answer is not None:
                return answer
        name, arguments = script(blocks)
        return web.json_response(completion(name, arguments, model=body["model"]))

    async def _tool(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        pid = int(request.headers.get(PID_HEADER, "0"))
        self.tool_calls[(body["thread"], body["n"])] += 1
        if self._caught(Hit("tool", pid, body["thread"])):
            return await self.hold()
        if self.tool_delay:
            await asyncio.sleep(self.tool_delay)
        return web.json_response({"result": body["n"]})

    async def _inbox(self, request: web.Request) -> web.StreamResponse:
        message = await request.json()
        pid = int(request.headers.get(PID_HEADER, "0"))
        # The person has it from here on, whether or not the sender hears back.
        self.inbox.append((message, pid))
        if self._caught(Hit("send", pid, message["thread_id"])):
            return await self.hold()
        return web.Response(status=200, headers={"x-message-id": f"inbox-{len(self.inbox)}"})


# ---------------------------------------------------------------- Redis


class RedisServer:
    """A redis-server with its append-only file in `data_dir`, restartable on the same port.

    `fsync` is the appendfsync policy: `everysec` (the embedded server's) may lose
    about the last second of writes when the process is killed; `always` fsyncs
    every write before Redis answers it.
    """

    def __init__(self, data_dir: Path, *, fsync: str = "everysec") -> None:
        self.dir = data_dir
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.conf = data_dir / "redis.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"dir {data_dir}",
                    "appendonly yes",
                    f"appendfsync {fsync}",
                    'save ""',
                    "daemonize no",
                    f"logfile {data_dir / 'redis.log'}",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def alive(self) -> bool:
        client = self._client()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_executable(), str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.alive():
            assert self.proc.poll() is None and time.monotonic() < deadline, (self.dir / "redis.log").read_text()
            time.sleep(0.02)

    def shutdown(self) -> None:
        """SHUTDOWN: Redis writes and fsyncs its append-only file, then exits."""
        client = self._client()
        try:
            client.shutdown()
        finally:
            client.close()
        self.proc.wait(timeout=20)

    def kill(self) -> None:
        """kill -9: whatever the append-only file has not fsynced is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


# ---------------------------------------------------------------- children


def fault_env(settings, control: Control, **values) -> dict[str, str]:
    """The environment of a `frontdesk` child serving the fault agent against `control`."""
    defaults = dict(
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), str(FAULTS)]),
        FRONTDESK_REDIS_URL=settings.redis_url,
        FRONTDESK_KEY_PREFIX=settings.key_prefix,
        FRONTDESK_AGENTS="faultkit:agents",
        FRONTDESK_CHANNELS="faultkit:channels",
        FRONTDESK_MODEL="openai:fault",
        OPENAI_BASE_URL=f"{control.url}/v1",
        OPENAI_API_KEY="fault-key",
        FAULT_CONTROL_URL=control.url,
        FRONTDESK_CLAIM_TIMEOUT=1,
        FRONTDESK_SHUTDOWN_GRACE=5,
        FRONTDESK_RETRY_BASE=0.05,
        FRONTDESK_RETRY_MAX=0.2,
        FRONTDESK_RATE_LIMIT=0,  # one sender starts every thread
    )
    return child_env(**{**defaults, **values})
