"""The sample agents end to end: through the API, the worker and the outbox, with
the demo model and with a real OpenAI client against a local server."""

from __future__ import annotations

import json

import httpx
import pytest
from helpers import background, eventually
from plugins import SinkChannel
from servers import LoopbackServer, app_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agents import load_agents
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker


class DeployService:
    """A deploy service on loopback: versions, and deploys recorded with their Idempotency-Key."""

    def __init__(self) -> None:
        self.deploys: list[tuple[dict, str]] = []
        self.app = Starlette(
            routes=[Route("/versions", self.versions), Route("/deploy", self.deploy, methods=["POST"])]
        )

    async def versions(self, request: Request) -> JSONResponse:
        return JSONResponse({"versions": ["v2.1.0", "v2.0.3", "v1.9.9"]})

    async def deploy(self, request: Request) -> JSONResponse:
        self.deploys.append((await request.json(), request.headers.get("idempotency-key", "")))
        return JSONResponse({"status": "deployed", "url": "https://web.example/"})


class Sink:
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.app = Starlette(routes=[Route("/", self.post, methods=["POST"])])

    async def post(self, request: Request) -> JSONResponse:
        self.messages.append(await request.json())
        return JSONResponse({})


@pytest.fixture
def sink():
    sink = Sink()
    with LoopbackServer(sink.app) as server:
        sink.url = server.url + "/"
        yield sink


async def drive(settings, sink_url: str):
    async with running(settings, builtins=False, agents=[load_agents], channels=[SinkChannel(sink_url)]) as rt:
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
                yield client


async def status_of(client, thread_id, status, events: int = 0):
    """The thread once it has `status` and more than `events` events."""

    async def check():
        thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
        return thread if thread["status"] == status and len(thread["events"]) > events else None

    return await eventually(check)


async def test_deploybot_lists_asks_deploys_after_approval_and_reports(settings, sink, monkeypatch):
    service = DeployService()
    with LoopbackServer(service.app) as deploy:
        monkeypatch.setenv("FRONTDESK_DEPLOYBOT_URL", deploy.url)  # the agent's own settings read it
        async for client in drive(settings, sink.url):
            r = await client.post(
                "/api/v1/threads",
                json={
                    "agent": "deploybot",
                    "text": "please deploy web",
                    "contact": {"channel": "test", "address": "ops"},
                },
            )
            assert r.status_code == 422  # "test" is not a contact channel the API offers
            thread_id = (
                await client.post("/api/v1/threads", json={"agent": "deploybot", "text": "please deploy web"})
            ).json()["id"]
            thread = await status_of(client, thread_id, "waiting_human")
            assert thread["events"][-1]["choices"] == ["v2.1.0", "v2.0.3", "v1.9.9"]
            await client.post(f"/api/v1/threads/{thread_id}/events", json={"type": "human_response", "text": "v2.0.3"})
            thread = await status_of(client, thread_id, "waiting_approval")
            assert service.deploys == []  # nothing ships before the approval
            call_id = thread["events"][-1]["call_id"]
            await client.post(
                f"/api/v1/threads/{thread_id}/events",
                json={"type": "approval_decision", "call_id": call_id, "approved": True},
            )
            thread = await status_of(client, thread_id, "done")
    assert service.deploys == [
        ({"service": "web", "version": "v2.0.3", "environment": "production"}, f"{thread_id}:{call_id}")
    ]
    assert "deployed" in thread["events"][-1]["text"]


async def test_helpdesk_answers_from_the_faq(settings, sink):
    async for client in drive(settings, sink.url):
        thread_id = (
            await client.post("/api/v1/threads", json={"agent": "helpdesk", "text": "What are your opening hours?"})
        ).json()["id"]
        thread = await status_of(client, thread_id, "done")
    assert thread["events"][1]["type"] == "context" and thread["events"][1]["name"] == "faq"
    assert "Monday to Friday" in thread["events"][-1]["text"]


async def test_helpdesk_hands_over_to_an_operator_on_another_channel(settings, sink, tmp_path):
    """The customer writes by API; the operator is asked on the `test` channel; the answer comes back."""
    config = tmp_path / "frontdesk.toml"
    config.write_text('[agents.helpdesk]\ncontacts = { operator = "test:ops-desk" }\n')
    settings = settings.model_copy(update={"config_path": config})
    async for client in drive(settings, sink.url):
        thread_id = (
            await client.post("/api/v1/threads", json={"agent": "helpdesk", "text": "Do you sell gift cards?"})
        ).json()["id"]
        first = await status_of(client, thread_id, "waiting_human")  # a clarifying question first
        await client.post(
            f"/api/v1/threads/{thread_id}/events", json={"type": "human_response", "text": "For my sister's birthday"}
        )
        thread = await status_of(client, thread_id, "waiting_human", events=len(first["events"]))
        ask = [e for e in thread["events"] if e["type"] == "request_human_input"][-1]
        assert ask["contact"] == {"channel": "test", "address": "ops-desk", "reply_to": {}}
        # The question went out on the operator's channel, to the operator.
        await eventually(lambda: any(m["address"] == "ops-desk" for m in sink.messages))
        await client.post(
            f"/api/v1/threads/{thread_id}/events", json={"type": "human_response", "text": "Yes, in any amount."}
        )
        thread = await status_of(client, thread_id, "done")
    assert thread["events"][-1]["text"] == "[demo model] Our team says: Yes, in any amount."


class FakeOpenAI:
    """Speaks Chat Completions; answers calculator's steps like a model would."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])])

    async def complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        context = body["messages"][-1]["content"]
        if "<tool_result" in context and "divide" in context:
            name, args = "done_for_now", {"message": "6 times 7 divided by 2 is 21."}
        elif "<human_response" in context:
            name, args = "divide", {"a": 42, "b": 2}
        elif "<tool_result" in context:
            name, args = "request_human_input", {"question": "42. Divide by what?"}
        else:
            name, args = "multiply", {"a": 6, "b": 7}
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": f"call_{len(self.requests)}",
                                    "type": "function",
                                    "function": {"name": name, "arguments": json.dumps(args)},
                                }
                            ],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            }
        )


async def test_calculator_end_to_end_with_an_openai_compatible_server(settings, sink):
    fake = FakeOpenAI()
    with LoopbackServer(fake.app) as server:
        settings = settings.model_copy(update={"model": "openai:local-model", "openai_base_url": f"{server.url}/v1"})
        async for client in drive(settings, sink.url):
            thread_id = (
                await client.post("/api/v1/threads", json={"agent": "calculator", "text": "6 times 7, then halve it"})
            ).json()["id"]
            await status_of(client, thread_id, "waiting_human")
            await client.post(f"/api/v1/threads/{thread_id}/events", json={"type": "human_response", "text": "2"})
            thread = await status_of(client, thread_id, "waiting_approval")
            call_id = thread["events"][-1]["call_id"]
            await client.post(
                f"/api/v1/threads/{thread_id}/events",
                json={"type": "approval_decision", "call_id": call_id, "approved": True},
            )
            thread = await status_of(client, thread_id, "done")
    assert thread["events"][-1]["text"] == "6 times 7 divided by 2 is 21."
    assert [e["result"] for e in thread["events"] if e["type"] == "tool_result"] == [42.0, 21.0]
    first = fake.requests[0]
    assert first["model"] == "local-model" and first["tool_choice"] == "required"
    assert {t["function"]["name"] for t in first["tools"]} == {
        "add",
        "subtract",
        "multiply",
        "divide",
        "request_human_input",
        "done_for_now",
    }
    assert thread["events"][1]["usage"] == {"input_tokens": 100, "output_tokens": 10, "model": "local-model"}
