"""OpenAIModel against a fake Chat Completions server on loopback."""

from __future__ import annotations

import json
import socket

import pytest
from structlog.testing import capture_logs

from agents.kit.models import ModelError, ToolSpec, Usage
from agents.kit.models import openai as openai_module
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


@pytest.fixture(autouse=True)
def _unlearned(monkeypatch):
    """Each test meets its server fresh: what a server accepts is learned per process."""
    monkeypatch.setattr(openai_module, "_LEARNED", {})
    monkeypatch.setattr(openai_module, "_STRIKES", {})


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


async def test_500_every_time_is_an_outage_retried_then_a_model_error(fake_api, openai_model):
    api = fake_api((500, {"error": {"message": "boom"}}, {"Retry-After": "0.05"}))
    model = openai_model(api.url, model_retries=1)
    with pytest.raises(ModelError) as caught:
        await model.next_step("s", "c", TOOLS)
    assert caught.value.status == 500
    assert caught.value.retry_after == pytest.approx(0.05)
    # Each shape once (a 5xx every shape meets is no refusal), then the settled shape with its retry.
    shapes = len(openai_module._SHAPES)
    assert len(api.requests) == shapes + 2
    assert api.requests[-1].json["tool_choice"] == api.requests[0].json["tool_choice"] == "required"
    assert model.shape == openai_module._SHAPES[0]  # nothing learned from an outage


async def test_a_5xx_on_the_only_shape_left_is_retried_once_over(fake_api, openai_model, monkeypatch):
    api = fake_api((503, {"error": {"message": "loading"}}, {"Retry-After": "0.05"}))
    model = openai_model(api.url, model_retries=1)
    monkeypatch.setitem(openai_module._LEARNED, model._server, len(openai_module._SHAPES) - 1)
    with pytest.raises(ModelError, match="loading"):
        await model.next_step("s", "c", TOOLS)
    assert len(api.requests) == 2  # its own retry, not a second round of them


# llama-cpp-python 0.3.36's server with --chat_format chatml-function-calling, as seen here:
# its handler asserts tool_choice == "auto", and the AssertionError leaves as this 500.
LLAMA_CPP_500 = (500, {"error": {"message": "", "type": "internal_server_error", "param": None, "code": None}})


async def test_a_500_only_the_stricter_shapes_meet_is_a_refusal_learned_once(fake_api, openai_model):
    ok = (200, completion(("done_for_now", '{"text": "hi"}')))
    api = fake_api(LLAMA_CPP_500, LLAMA_CPP_500, ok, LLAMA_CPP_500, LLAMA_CPP_500, ok, ok, ok)
    first, second = openai_model(api.url), openai_model(api.url)
    with capture_logs() as logs:
        # Once is not yet a refusal (a flaky 500 must not downgrade the server): the 500 stands.
        with pytest.raises(ModelError) as caught:
            await first.next_step("s", "c", TOOLS)
        assert caught.value.status == 500 and first.shape == openai_module._SHAPES[0]
        # It recurs for the strict shapes and not for "auto": learned.
        assert (await first.next_step("s", "c", TOOLS)).tool == "done_for_now"
        # Another client of the same server (another agent) goes straight to the shape that works.
        assert (await second.next_step("s", "c", TOOLS)).tool == "done_for_now"
        assert (await first.next_step("s", "c", TOOLS)).tool == "done_for_now"
    choices = [seen.json.get("tool_choice") for seen in api.requests]
    # No retries of a refused shape; once learned, every client goes straight to what works.
    assert choices == ["required", "required", "auto", "required", "required", "auto", "auto", "auto"]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and "tool_choice=auto" in warnings[0]["shape"]
    assert first.shape == {"tool_choice": "auto"}


async def test_a_server_without_tools_gets_the_step_schema_and_its_json_answer_is_the_step(fake_api, openai_model):
    no_tools = (400, {"error": {"message": "tools are not supported by this model"}})
    answer = json.dumps({"name": "lookup_order", "arguments": {"id": "A-7"}})
    api = fake_api(no_tools, no_tools, no_tools, no_tools, (200, completion(content=answer)))
    reply = await openai_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments) == ("lookup_order", {"id": "A-7"})
    body = api.requests[-1].json
    assert "tools" not in body and "tool_choice" not in body
    schema = body["response_format"]["json_schema"]["schema"]
    assert [option["properties"]["name"]["const"] for option in schema["anyOf"]] == ["lookup_order", "done_for_now"]
    assert schema["anyOf"][0]["properties"]["arguments"] == TOOLS[0].parameters


# LiteLLM's proxy 1.106.0 in front of that server, as seen here: the 500 passes through, wrapped.
LITELLM_500 = (
    500,
    {
        "error": {
            "message": "litellm.InternalServerError: InternalServerError: OpenAIException - Error code: 500 - "
            "{'error': {'message': '', 'type': 'internal_server_error', 'param': None, 'code': None}}\n\n"
            "LiteLLM: model group 'smollm2' failed with the error above. No fallback was attempted.",
            "type": "internal_server_error",
            "param": None,
            "code": "500",
        }
    },
)


async def test_litellms_wrapped_500_is_learned_like_the_server_behind_it(fake_api, openai_model):
    ok = (200, completion(("done_for_now", '{"text": "hi"}')))
    api = fake_api(LITELLM_500, LITELLM_500, ok, LITELLM_500, LITELLM_500, ok, ok)
    model = openai_model(api.url)
    with capture_logs() as logs:
        with pytest.raises(ModelError, match="No fallback was attempted"):
            await model.next_step("s", "c", TOOLS)
        assert (await model.next_step("s", "c", TOOLS)).tool == "done_for_now"
        assert (await model.next_step("s", "c", TOOLS)).tool == "done_for_now"
    assert [seen.json.get("tool_choice") for seen in api.requests][-1] == "auto"
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert "model group 'smollm2' failed" in warning["server_said"]


# llama-cpp-python 0.3.36's server, asked for OpenAI's json_schema response format (seen here):
# its request model takes only "text" or "json_object", and the validation error leaves as a 500.
LLAMA_CPP_JSON_SCHEMA_500 = (
    500,
    {
        "error": {
            "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
            "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)


async def test_llama_cpps_own_json_object_schema_is_the_last_shape(fake_api, openai_model):
    no_tools = (400, {"error": {"message": "tools are not supported by this model"}})
    answer = json.dumps({"name": "lookup_order", "arguments": {"id": "A-9"}})
    ok = (200, completion(content=answer))
    api = fake_api(no_tools, no_tools, no_tools, no_tools, LLAMA_CPP_JSON_SCHEMA_500, ok, ok)
    model = openai_model(api.url)
    with capture_logs() as logs:
        reply = await model.next_step("s", "c", TOOLS)
        assert (reply.tool, reply.arguments) == ("lookup_order", {"id": "A-9"})
        # Learned at once (the tools shapes were refused outright): the next turn goes straight there.
        assert (await model.next_step("s", "c", TOOLS)).tool == "lookup_order"
    formats = [seen.json.get("response_format", {}).get("type") for seen in api.requests]
    assert formats == [None, None, None, None, "json_schema", "json_object", "json_object"]
    body = api.requests[-1].json
    assert "tools" not in body
    assert [o["properties"]["name"]["const"] for o in body["response_format"]["schema"]["anyOf"]] == [
        "lookup_order",
        "done_for_now",
    ]
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert "json_object" in warning["shape"] and "tools are not supported" in warning["server_said"]
    assert model.accepts == "no tools; response_format json_object with the steps' schema"


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "lookup_order", "arguments": {"id": "A-1"}}',
        'Sure.\n```json\n{"name": "lookup_order", "parameters": {"id": "A-1"}}\n```',
        '<tool_call>\n{"name": "lookup_order", "arguments": {"id": "A-1"}}\n</tool_call>',
        'functions.lookup_order: {"id": "A-1"}',
        '{"function": {"name": "lookup_order", "arguments": "{\\"id\\": \\"A-1\\"}"}}',
    ],
)
async def test_a_call_written_as_text_is_read_as_the_call(fake_api, openai_model, content):
    api = fake_api((200, completion(content=content)))
    reply = await openai_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments, reply.text) == ("lookup_order", {"id": "A-1"}, content)


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "drop_tables", "arguments": {}}',  # a tool that was not offered
        '<tool_call>{"name": "lookup_order", "arguments": {"id": "1"}}</tool_call>'
        '<tool_call>{"name": "done_for_now", "arguments": {}}</tool_call>',  # two calls
        '{"name": "lookup_order", "arguments": {"id": "1"}, "answer": "it shipped"}',  # more than a call
        '{"id": "A-1"}',  # arguments without a name
        "I would call lookup_order with id A-1.",
    ],
)
async def test_text_that_is_not_exactly_one_offered_call_stays_text(fake_api, openai_model, content):
    api = fake_api((200, completion(content=content)))
    reply = await openai_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments, reply.text) == (None, None, content)


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
    shapes = len(openai_module._SHAPES)
    with pytest.raises(ModelError):
        await model.next_step("s", "c", TOOLS)
    assert len(api.requests) == 2 * shapes
    assert api.requests[shapes].json["parallel_tool_calls"] is False
