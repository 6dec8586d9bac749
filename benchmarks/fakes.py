"""The outside world on loopback, as cheap as it can be: a model, Slack's Web API, a callback receiver.

A bare HTTP/1.1 server (httptools' parser on uvloop, no framework) in its own process,
so that what it costs stays out of the measured process, and is as little as can be
taken from the cores the measured processes share:

- `POST /v1/chat/completions`: an OpenAI-compatible model. It answers with the
  `add` tool until the context holds `turns` tool results, then `done_for_now`;
  after `delay` seconds (0: at once). It counts requests and integrates the
  number in flight over time, so the harness can read the mean concurrency.
- `POST /peer/v1/chat/completions`: the same model for the peer gateway (OpenClaw), which
  runs its own agent loop without our tools: it answers the final text as plain content,
  as a stream of server-sent events when the request asks for one; same `delay`.
- `POST /api/{method}`: Slack's `auth.test`, `chat.postMessage` (recorded, with
  its arrival time), `reactions.add`.
- `POST /callback`: a webhook receiver; arrivals are recorded by thread id.
- `POST /control` {"delay", "turns"} resets the counters; `GET /stats`, `GET /arrivals`.
- `POST /wait` {"key", "timeout"}: answers {"at": arrival time} once the Slack reply in
  thread `key` has arrived (404 after `timeout`), so that a closed-loop sender learns of its
  reply at once rather than by polling.

Arrival times are `time.monotonic()`, which on Linux is one clock for every process.

    python -m benchmarks.fakes --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httptools
import uvloop

TEAM, BOT_USER, BOT_ID = "T0BENCH", "U0BOT", "B0BOT"


def _completion(name: str, arguments: dict) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_bench",
                                "type": "function",
                                "function": {"name": name, "arguments": json.dumps(arguments)},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 200, "completion_tokens": 12, "total_tokens": 212},
        }
    ).encode()


TOOL = _completion("add", {"a": 1, "b": 2})
DONE = _completion("done_for_now", {"message": "All done: 3."})
REPLY_TEXT = "All done: 3."  # what both gateways end up posting to Slack


def _text_completion() -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY_TEXT}}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 12, "total_tokens": 212},
        }
    ).encode()


def _text_stream() -> bytes:
    """The same answer as Chat Completions' server-sent events: the text, the stop, the usage, [DONE]."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": REPLY_TEXT}, "finish_reason": None}],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 200, "completion_tokens": 12, "total_tokens": 212}},
    ]
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


TEXT = _text_completion()
STREAM = _text_stream()
OK = b'{"ok":true}'
POSTS = (
    "chat.postMessage",
    "chat.startStream",
)  # a reply's arrival: a stream's start is its post (channels/slack/stream.py)
AUTH = json.dumps(
    {"ok": True, "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "url": "https://bench.slack.com/"}
).encode()


class State:
    def __init__(self) -> None:
        self.reset(0.0, 1)

    def reset(self, delay: float, turns: int) -> None:
        self.delay, self.turns = delay, turns
        self.requests = 0
        self.request_bytes = 0  # of the model calls' bodies: how much prompt each gateway sends
        self.in_flight = self.max_in_flight = 0
        self.area, self.since = 0.0, time.monotonic()  # integral of in_flight dt
        self.arrivals: list[tuple[str, str, float]] = []
        self.replied: dict[str, float] = {}  # Slack thread_ts -> arrival of its reply
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.posts = 0
        self.methods: dict[str, int] = {}  # Slack Web API calls by method: what each gateway calls on the way

    def _tick(self) -> None:
        now = time.monotonic()
        self.area += self.in_flight * (now - self.since)
        self.since = now

    def enter(self) -> None:
        self._tick()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self._tick()
        self.in_flight -= 1
        self.requests += 1

    def stats(self) -> dict:
        self._tick()
        return {
            "requests": self.requests,
            "request_bytes": self.request_bytes,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "area": self.area,
            "at": self.since,
            "arrivals": len(self.arrivals),
            "slack_posts": self.posts,
            "slack_methods": self.methods,
        }


state = State()


async def handle(path: str, body: bytes) -> tuple[int, bytes] | tuple[int, bytes, str]:
    if path in ("/v1/chat/completions", "/peer/v1/chat/completions"):
        state.enter()
        state.request_bytes += len(body)
        try:
            if state.delay:
                await asyncio.sleep(state.delay)
            if path.startswith("/peer/"):
                stream = b'"stream":true' in body.replace(b" ", b"")
                return (200, STREAM, "text/event-stream") if stream else (200, TEXT)
            # The context is JSON-encoded inside the request; each tool result is one block.
            return 200, TOOL if body.count(b"<tool_result") < state.turns else DONE
        finally:
            state.leave()
    if path.startswith("/api/"):
        method = path[5:]
        state.methods[method] = state.methods.get(method, 0) + 1
        if method == "auth.test":
            return 200, AUTH
        if method in POSTS:
            args = _json(body)
            state.posts += 1
            key, at = str(args.get("thread_ts") or ""), time.monotonic()
            state.arrivals.append(("slack", key, at))
            state.replied.setdefault(key, at)
            waiter = state.waiting.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(at)
            ts = f"{time.time():.6f}"
            return 200, json.dumps(
                {"ok": True, "channel": args.get("channel"), "ts": ts, "message": {"ts": ts}}
            ).encode()
        return 200, OK
    if path == "/callback":
        payload = _json(body)
        state.arrivals.append(("webhook", str(payload.get("thread_id") or ""), time.monotonic()))
        return 200, OK
    if path == "/control":
        args = json.loads(body or b"{}")
        state.reset(float(args.get("delay", 0.0)), int(args.get("turns", 1)))
        return 200, OK
    if path == "/wait":
        args = json.loads(body or b"{}")
        key = str(args["key"])
        if key not in state.replied:
            waiter = state.waiting.setdefault(key, asyncio.get_running_loop().create_future())
            try:
                await asyncio.wait_for(asyncio.shield(waiter), float(args.get("timeout", 30)))
            except TimeoutError:
                return 404, b'{"error":"no reply"}'
        return 200, json.dumps({"at": state.replied[key]}).encode()
    if path == "/stats":
        return 200, json.dumps(state.stats()).encode()
    if path == "/arrivals":
        return 200, json.dumps(state.arrivals).encode()
    return 404, b'{"error":"not found"}'


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, parsed by httptools (uvicorn's parser) and nothing else.

    No ASGI server in between: at a thousand model calls a second, uvicorn's per-request
    work was a fifth of a core taken from the two the workers under test share.
    """

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self.url).path.decode()
        asyncio.ensure_future(self._answer(path, b"".join(self.body), self.parser.should_keep_alive()))

    async def _answer(self, path: str, body: bytes, keep_alive: bool) -> None:
        status, reply, *kind = await handle(path, body)
        if self.transport.is_closing():
            return
        ctype = kind[0] if kind else "application/json"
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\ncontent-type: {ctype}\r\ncontent-length: {len(reply)}\r\n"
        self.transport.write(head.encode() + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n") + reply)
        if not keep_alive:
            self.transport.close()


def _json(body: bytes) -> dict:
    """A JSON body, or a form body (slack_sdk posts some methods as forms)."""
    try:
        value = json.loads(body or b"{}")
        return value if isinstance(value, dict) else {}
    except ValueError:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(body.decode(errors="replace")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Connection, "127.0.0.1", args.port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
