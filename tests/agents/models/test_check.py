"""`frontdesk check --model`'s probe: one request through the agents' own client."""

from __future__ import annotations

import pytest
from test_openai import LLAMA_CPP_500, completion

from agents.kit.models import openai as openai_module
from agents.kit.models.check import check_model


@pytest.fixture(autouse=True)
def _unlearned(monkeypatch):
    monkeypatch.setattr(openai_module, "_LEARNED", {})
    monkeypatch.setattr(openai_module, "_STRIKES", {})


async def test_a_server_that_crashes_on_tool_choice_required_is_reported_with_the_shape_it_took(fake_api, settings_for):
    ok = (200, completion(("done_for_now", '{"message": "ok"}')))
    api = fake_api(LLAMA_CPP_500, LLAMA_CPP_500, ok, LLAMA_CPP_500, LLAMA_CPP_500, ok)
    result = await check_model(settings_for(api.url), "openai:smollm2")
    assert result.error is None
    assert result.accepts == "tool_choice=auto"
    assert result.answer == 'a call to done_for_now with \'{"message": "ok"}\''
    assert result.lines()[0] == f"openai:smollm2 at {api.url}/v1: answered"
    assert len(api.requests) == 6 and api.requests[0].json["model"] == "smollm2"


async def test_an_answer_without_a_call_is_named_as_what_the_agents_will_meet(fake_api, settings_for):
    api = fake_api((200, completion(content="Hello there!")))
    result = await check_model(settings_for(api.url), "openai:tiny")
    assert result.error is None and result.accepts == "tool_choice=required, parallel_tool_calls=False"
    assert "text, no tool call ('Hello there!')" in result.answer and "no_tool_call" in result.answer


async def test_a_server_that_is_down_fails_the_check_with_its_words(fake_api, settings_for):
    api = fake_api((503, {"error": {"message": "model is loading"}}))
    result = await check_model(settings_for(api.url, model_retries=0), "openai:big")
    assert result.error is not None and "503 model is loading" in result.error
    assert result.lines() == [f"openai:big at {api.url}/v1: FAILED: {result.error}"]
