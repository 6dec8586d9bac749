"""The agent-step floor: only the Redis reads and writes of a step and the model's HTTP call.

A step here: read the entry (XREADGROUP), load the thread (HGETALL + LRANGE in one
round trip), POST a Chat Completions request of about the same size as
frontdesk's to the same fake model and read its tool call, then one MULTI that
appends the two new events, updates the thread's hash, acknowledges the entry and
queues the next turn (or the outbound message when the model is done). No
rendering beyond string joins, no validation, no leases.

    python -m benchmarks.floors.steps --redis URL --model URL [--concurrency 64]

At most `concurrency` steps at once (64: past that an instant model only adds queueing),
with a keep-alive pool as large as the connections it may open.

The harness preloads `floor:inbound` with one entry per thread (`t` = thread id).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import httpx
import redis.asyncio as aioredis

STREAM, GROUP = "floor:inbound", "floor"
SYSTEM = (
    "You are calculator, a careful calculator. Arithmetic; every division is approved by a person first.\n\n"
    "Work one step at a time. Each reply is exactly one tool call.\n"
    + "Use the arithmetic tools for every calculation; never compute in your head.\n"
    * 6
)
_NUMBERS = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": name, "description": f"{name.title()} two numbers.", "parameters": _NUMBERS},
    }
    for name in ("add", "subtract", "multiply", "divide")
] + [
    {
        "type": "function",
        "function": {
            "name": "request_human_input",
            "description": "Ask a person a question and wait for the answer.",
            "parameters": {
                "type": "object",
                "properties": {
                    "question": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["question"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "done_for_now",
            "description": "Finish for now with a final message.",
            "parameters": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
        },
    },
]


async def step(r: aioredis.Redis, http: httpx.AsyncClient, model: str, entry_id: str, tid: str) -> None:
    async with r.pipeline(transaction=False) as pipe:
        meta, events = await pipe.hgetall(f"floor:t:{tid}").lrange(f"floor:e:{tid}", 0, -1).execute()
    context = "\n".join(
        f"<{e['type']}>\n{e.get('text', '')}\n</{e['type']}>"
        for e in map(json.loads, events or [json.dumps({"type": "user_message", "text": "what is 1 plus 2?"})])
    )
    body = {
        "model": "bench",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": context}],
        "tools": TOOLS,
        "tool_choice": "required",
    }
    response = await http.post(model, json=body)
    function = response.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    turn = len(events) // 2
    async with r.pipeline(transaction=True) as pipe:
        if function["name"] == "done_for_now":
            pipe.rpush(
                f"floor:e:{tid}",
                json.dumps({"type": "done_for_now", "text": json.loads(function["arguments"])["message"]}),
            )
            pipe.xadd("floor:outbox", {"t": tid, "m": function["arguments"]})
        else:
            pipe.rpush(
                f"floor:e:{tid}",
                json.dumps({"type": "tool_call", "text": function["arguments"]}),
                json.dumps({"type": "tool_result", "text": "3"}),
            )
            pipe.xadd(STREAM, {"t": tid})
        pipe.hset(f"floor:t:{tid}", mapping={"status": "running", "turns": turn + 1})
        pipe.xack(STREAM, GROUP, entry_id)
        await pipe.execute()


async def main(url: str, model: str, concurrency: int) -> None:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    http = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task] = set()

    async def run(entry_id: str, tid: str) -> None:
        try:
            await step(r, http, model, entry_id, tid)
        finally:
            slots.release()

    while not stop.is_set():
        rows = await r.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=100, block=200)
        for _, entries in rows or []:
            for entry_id, fields in entries:
                await slots.acquire()
                task = asyncio.create_task(run(entry_id, fields["t"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.aclose()
    await r.aclose()


def _loop_factory():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    # The event loop `frontdesk` itself runs on (gateway.cli: uvloop when installed).
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main(args.redis, args.model, args.concurrency))
