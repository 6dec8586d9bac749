"""AnthropicModel against a fake Messages API on loopback."""

from __future__ import annotations

import pytest

from agents.kit.models import ModelError, ToolSpec, Usage
from agents.kit.models.anthropic import AnthropicModel

TOOLS = [
    ToolSpec("lookup_order", "Find an order by id.", {"type": "object", "properties": {"id": {"type": "string"}}}),
    ToolSpec(
        "done_for_now", "Answer the person and stop.", {"type": "object", "properties": {"text": {"type": "string"}}}
    ),
]


def message(*blocks: dict, stop_reason: str = "tool_use") -> dict:
    """A Messages API body with the given content blocks."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-0001",
        "content": list(blocks),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 9, "cache_read_input_tokens": 12},
    }


def tool_use(name: str, arguments: dict, n: int = 1) -> dict:
    return {"type": "tool_use", "id": f"toolu_{n}", "name": name, "input": arguments}


def error(kind: str, text: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": text}}


@pytest.fixture
async def anthropic_model(settings_for):
    models: list[AnthropicModel] = []

    def build(url: str, **overrides) -> AnthropicModel:
        models.append(AnthropicModel(settings_for(url, **overrides), "claude-test"))
        return models[-1]

    yield build
    for model in models:
        await model.aclose()


async def test_tool_use_carries_tools_and_tool_choice_any(fake_api, anthropic_model):
    body = message({"type": "text", "text": "Let me look."}, tool_use("lookup_order", {"id": "A-1"}))
    api = fake_api((200, body))
    reply = await anthropic_model(api.url).next_step("You are the help desk.", "<user_message>hi</user_message>", TOOLS)

    assert (reply.tool, reply.arguments) == ("lookup_order", {"id": "A-1"})
    assert reply.usage == Usage(input_tokens=42, output_tokens=9)  # cached prompt tokens count too
    assert (reply.text, reply.model) == ("Let me look.", "claude-test-0001")
    [seen] = api.requests
    assert seen.path == "/v1/messages"
    # Older SDKs send the key as x-api-key, newer ones as a bearer token.
    assert (seen.headers.get("x-api-key") or seen.headers["authorization"]).endswith("test-key")
    sent = seen.json
    assert (sent["model"], sent["system"], sent["max_tokens"]) == ("claude-test", "You are the help desk.", 4096)
    assert sent["messages"] == [{"role": "user", "content": "<user_message>hi</user_message>"}]
    assert sent["tools"][0] == {
        "name": "lookup_order",
        "description": TOOLS[0].description,
        "input_schema": TOOLS[0].parameters,
    }
    assert [t["name"] for t in sent["tools"]] == ["lookup_order", "done_for_now"]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


async def test_first_tool_use_wins_and_unknown_names_pass_through(fake_api, anthropic_model):
    body = message(tool_use("no_such_tool", {"x": 1}), tool_use("done_for_now", {"text": "bye"}, n=2))
    api = fake_api((200, body))
    reply = await anthropic_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments, reply.text) == ("no_such_tool", {"x": 1}, None)


async def test_text_only_answer_is_a_reply_without_tool(fake_api, anthropic_model):
    body = message(
        {"type": "text", "text": "Shipped."}, {"type": "text", "text": "Anything else?"}, stop_reason="end_turn"
    )
    api = fake_api((200, body))
    reply = await anthropic_model(api.url).next_step("s", "c", TOOLS)
    assert (reply.tool, reply.arguments, reply.text) == (None, None, "Shipped.\nAnything else?")


async def test_429_with_retry_after_is_retried(fake_api, anthropic_model):
    limited = (429, error("rate_limit_error", "slow down"), {"retry-after": "0.05"})
    api = fake_api(limited, (200, message(tool_use("done_for_now", {}))))
    reply = await anthropic_model(api.url, model_retries=1).next_step("s", "c", TOOLS)
    assert reply.tool == "done_for_now"
    assert len(api.requests) == 2


async def test_overloaded_every_time_is_a_model_error(fake_api, anthropic_model):
    api = fake_api((529, error("overloaded_error", "Overloaded"), {"retry-after": "0.05"}))
    with pytest.raises(ModelError, match="Overloaded") as caught:
        await anthropic_model(api.url, model_retries=1).next_step("s", "c", TOOLS)
    assert (caught.value.status, caught.value.retry_after) == (529, pytest.approx(0.05))
    assert len(api.requests) == 2


async def test_bad_request_is_not_retried(fake_api, anthropic_model):
    api = fake_api((400, error("invalid_request_error", "prompt is too long")))
    with pytest.raises(ModelError, match="prompt is too long") as caught:
        await anthropic_model(api.url, model_retries=2).next_step("s", "c", TOOLS)
    assert caught.value.status == 400
    assert len(api.requests) == 1


async def test_no_answer_is_a_model_error_after_the_timeout(fake_api, anthropic_model):
    api = fake_api("hang")
    with pytest.raises(ModelError, match="no answer") as caught:
        await anthropic_model(api.url, model_timeout=0.3, model_retries=0).next_step("s", "c", TOOLS)
    assert caught.value.status is None


def test_a_missing_key_for_the_real_api_is_refused_at_start(settings_for):
    settings = settings_for("http://127.0.0.1:9", anthropic_base_url=None, anthropic_api_key=None)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        AnthropicModel(settings, "claude-test")
