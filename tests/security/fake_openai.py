"""A fake Chat Completions server on loopback, driven by a policy: what would a model do with this context?

Our real OpenAI client (FRONTDESK_MODEL=openai:..., OPENAI_BASE_URL) talks to it.
`policy(system, context, tools)` returns the next step as (tool, arguments), or
an HTTP error as (status, body). Every request is recorded, headers included.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Policy = Callable[[str, str, list[str]], tuple[Any, Any]]


@dataclass
class Seen:
    system: str
    context: str
    tools: list[str]
    headers: dict[str, str]


def invalid_key(key: str) -> tuple[int, dict]:
    """OpenAI's 401 for a wrong key: it quotes the key masked, never whole."""
    masked = f"{key[:3]}***{key[-3:]}"
    return 401, {
        "error": {
            "message": f"Incorrect API key provided: {masked}.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


def server_error() -> tuple[int, dict]:
    return 500, {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


class FakeOpenAI:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.seen: list[Seen] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])

    async def _complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        context = "\n".join(m["content"] for m in messages if m["role"] == "user")
        tools = [t["function"]["name"] for t in body.get("tools", [])]
        self.seen.append(Seen(system, context, tools, dict(request.headers)))
        first, second = self.policy(system, context, tools)
        if isinstance(first, int):
            return JSONResponse(second, status_code=first)
        call = {
            "id": f"call_{len(self.seen)}",
            "type": "function",
            "function": {"name": first, "arguments": json.dumps(second)},
        }
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.seen)}",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            }
        )
