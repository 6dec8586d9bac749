"""The outside world on loopback, as cheap as it can be: a model, Slack's Web API, a callback receiver.

A bare ASGI app (no framework) under uvicorn with uvloop and httptools, in its own
process, so that what it costs stays out of the measured process:

- `POST /v1/chat/completions`: an OpenAI-compatible model. It answers with the
  `add` tool until the context holds `turns` tool results, then `done_for_now`;
  after `delay` seconds (0: at once). It counts requests and integrates the
  number in flight over time, so the harness can read the mean concurrency.
- `POST /api/{method}`: Slack's `auth.test`, `chat.postMessage` (recorded, with
  its arrival time), `reactions.add`.
- `POST /callback`: a webhook receiver; arrivals are recorded by thread id.
- `POST /control` {"delay", "turns"} resets the counters; `GET /stats`, `GET /arrivals`.

Arrival times are `time.monotonic()`, which on Linux is one clock for every process.

    python -m benchmarks.fakes --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvicorn

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
                        "tool_calls": [{"id": "call_bench", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}],
                    },
                }
            ],
            "usage": {"prompt_tokens": 200, "completion_tokens": 12, "total_tokens": 212},
        }
    ).encode()


TOOL = _completion("add", {"a": 1, "b": 2})
DONE = _completion("done_for_now", {"message": "All done: 3."})
OK = b'{"ok":true}'
AUTH = json.dumps({"ok": True, "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "url": "https://bench.slack.com/"}).encode()


class State:
    def __init__(self) -> None:
        self.reset(0.0, 1)

    def reset(self, delay: float, turns: int) -> None:
        self.delay, self.turns = delay, turns
        self.requests = 0
        self.in_flight = self.max_in_flight = 0
        self.area, self.since = 0.0, time.monotonic()  # integral of in_flight dt
        self.arrivals: list[tuple[str, str, float]] = []
        self.posts = 0

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
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "area": self.area,
            "at": self.since,
            "arrivals": len(self.arrivals),
            "slack_posts": self.posts,
        }


state = State()


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    body = await _body(receive)
    if path == "/v1/chat/completions":
        state.enter()
        try:
            if state.delay:
                await asyncio.sleep(state.delay)
            # The context is JSON-encoded inside the request; each tool result is one block.
            reply = TOOL if body.count(b"<tool_result") < state.turns else DONE
        finally:
            state.leave()
        return await _answer(send, reply)
    if path.startswith("/api/"):
        method = path[5:]
        if method == "auth.test":
            return await _answer(send, AUTH)
        if method == "chat.postMessage":
            args = _json(body, scope)
            state.posts += 1
            state.arrivals.append(("slack", str(args.get("thread_ts") or ""), time.monotonic()))
            ts = f"{time.time():.6f}"
            return await _answer(send, json.dumps({"ok": True, "channel": args.get("channel"), "ts": ts, "message": {"ts": ts}}).encode())
        return await _answer(send, OK)
    if path == "/callback":
        payload = _json(body, scope)
        state.arrivals.append(("webhook", str(payload.get("thread_id") or ""), time.monotonic()))
        return await _answer(send, OK)
    if path == "/control":
        args = json.loads(body or b"{}")
        state.reset(float(args.get("delay", 0.0)), int(args.get("turns", 1)))
        return await _answer(send, OK)
    if path == "/stats":
        return await _answer(send, json.dumps(state.stats()).encode())
    if path == "/arrivals":
        return await _answer(send, json.dumps(state.arrivals).encode())
    return await _answer(send, b'{"error":"not found"}', 404)


def _json(body: bytes, scope) -> dict:
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
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
