"""OpenAIModel against a fake Chat Completions server on loopback."""

from __future__ import annotations

import json
import socket

import pytest

from agents.kit.models import ModelError, ToolSpec, Usage
from agents.kit.models.openai import OpenAIModel

TOOLS = [
    ToolSpec("lookup_order", "Find an order by id.", {"type": "object", "properties": {"id": {"type": "string"}}}),
    ToolSpec(
        "done_for_now", "Answer the person and stop.", {"type": "object", "properties": {"text": {"type": "string"}}}
    ),
]


def completion(*calls: tuple[str, str], content: str | None = None) -> dict:
    """A Chat Completions body whose message makes `calls` (name, raw arguments)."""
    tool_calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}
        for i, (name, args) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": content, **({"tool_calls": tool_calls} if tool_calls else {})}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test-0001",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
    }


def refusal(param: str) -> tuple[int, dict]:
    return 400, {"error": {"message": f"{param} is not supported", "type": "invalid_request_error"}}


@pytest.fixture
async def openai_model(settings_for):
    models: list[OpenAIModel] = []

    def build(url: str, **overrides) -> OpenAIModel:
        models.append(OpenAIModel(settings_for(url, **overrides), "gpt-test"))
        return models[-1]

    yield build
    for model in models:
        await model.aclose()


async def test_tool_call_carries_tools_and_forced_choice(fake_api, openai_model):
    api = fake_api((200, completion(("lookup_order", '{"id": "A-1"}'), content="Looking.")))
    reply = await openai_model(api.url).next_step("You are the help desk.", "<user_message>hi</user_message>", TOOLS)

    assert (reply.tool, json.loads(reply.arguments)) == ("lookup_order", {"id": "A-1"})
    assert reply.usage == Usage(input_tokens=42, output_tokens=7)
    assert (reply.text, reply.model) == ("Looking.", "gpt-test-0001")
    [seen] = api.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer test-key"
    body = seen.json
    assert body["model"] == "gpt-test"
    assert body["messages"] == [
        {"role": "system", "content": "You are the help desk."},
        {"role": "user", "content": "<user_message>hi</user_message>"},
    ]
    assert [t["function"]["name"] for t in body["tools"]] == ["lookup_order", "done_for_now"]
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "lookup_order", "description": TOOLS[0].description, "parameters": TOOLS[0].parameters},
    }
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("required", False)


async def test_malformed_arguments_and_unknown_tools_come_back_raw(fake_api, openai_model):
    api = fake_api((200, completion(("no_such_tool", '{"id": "A-1"'))))
    reply = await openai_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments) == ("no_such_tool", '{"id": "A-1"')


async def test_loose_servers_untyped_calls_and_decoded_arguments_pass(fake_api, openai_model):
    body = completion(("lookup_order", "{}"))
    call = body["choices"][0]["message"]["tool_calls"][0]
    del call["type"]
    call["function"]["arguments"] = {"id": "A-1"}
    api = fake_api((200, body))
    reply = await openai_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments) == ("lookup_order", {"id": "A-1"})


async def test_first_of_several_tool_calls_wins(fake_api, openai_model):
    api = fake_api((200, completion(("lookup_order", '{"id": "1"}'), ("done_for_now", '{"text": "x"}'))))
    reply = await openai_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments) == ("lookup_order", '{"id": "1"}')


async def test_no_tool_call_is_a_reply_without_tool(fake_api, openai_model):
    api = fake_api((200, completion(content="I think the order shipped.")))
    reply = await openai_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments, reply.text) == (None, None, "I think the order shipped.")


async def test_429_with_retry_after_is_retried(fake_api, openai_model):
    limited = (429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"})
    api = fake_api(limited, (200, completion(("done_for_now", "{}"))))
    reply = await openai_model(api.url, model_retries=1).next_step("s", "c", TOOLS)
    assert reply.tool == "done_for_now"
    assert len(api.requests) == 2


async def test_500_every_time_is_a_model_error(fake_api, openai_model):
    api = fake_api((500, {"error": {"message": "boom"}}, {"Retry-After": "0.05"}))
    with pytest.raises(ModelError) as caught:
        await openai_model(api.url, model_retries=1).next_step("s", "c", TOOLS)
    assert caught.value.status == 500
    assert caught.value.retry_after == pytest.approx(0.05)
    assert len(api.requests) == 2


async def test_no_answer_is_a_model_error_after_the_timeout(fake_api, openai_model):
    api = fake_api("hang")
    with pytest.raises(ModelError, match="no answer") as caught:
        await openai_model(api.url, model_timeout=0.3, model_retries=0).next_step("s", "c", TOOLS)
    assert caught.value.status is None


async def test_unreachable_server_is_a_model_error(openai_model):
    # A port that was just free: connecting to it is refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelError, match="cannot reach"):
        await openai_model(f"http://127.0.0.1:{port}", model_retries=0).next_step("s", "c", TOOLS)


async def test_refused_shapes_fall_back_and_are_remembered(fake_api, openai_model):
    ok = (200, completion(("done_for_now", "{}")))
    api = fake_api(refusal("parallel_tool_calls"), refusal("tool_choice=required"), ok, ok)
    model = openai_model(api.url)

    assert (await model.next_step("s", "c", TOOLS)).tool == "done_for_now"
    first, second, third = (seen.json for seen in api.requests)
    assert (first["tool_choice"], first["parallel_tool_calls"]) == ("required", False)
    assert (second["tool_choice"], "parallel_tool_calls" in second) == ("required", False)
    assert (third["tool_choice"], "parallel_tool_calls" in third) == ("auto", False)

    # The next turn goes straight to the shape that worked.
    assert (await model.next_step("s", "c", TOOLS)).tool == "done_for_now"
    assert len(api.requests) == 4
    assert api.requests[3].json["tool_choice"] == "auto"


async def test_a_request_every_shape_refuses_reports_the_first_refusal(fake_api, openai_model):
    api = fake_api((422, {"error": {"message": "context too long"}}))
    model = openai_model(api.url)
    with pytest.raises(ModelError, match="context too long") as caught:
        await model.next_step("s", "c", TOOLS)
    assert caught.value.status == 422
    assert "tool_choice" not in api.requests[-1].json
    # Nothing worked, so nothing was learned: the next turn starts from the strictest shape.
    with pytest.raises(ModelError):
        await model.next_step("s", "c", TOOLS)
    assert len(api.requests) == 8
    assert api.requests[4].json["parallel_tool_calls"] is False
