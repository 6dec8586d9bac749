"""load_model and the shared Retry-After parsing in agents/kit/models/__init__.py."""

from __future__ import annotations

import email.utils
import time

import pytest

from agents.kit.models import load_model, retry_after_seconds
from agents.kit.models.anthropic import AnthropicModel
from agents.kit.models.openai import OpenAIModel

NOWHERE = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("setting", "kind", "name"),
    [
        ("openai:gpt-4o-mini", OpenAIModel, "openai:gpt-4o-mini"),
        ("openai:llama3.1:8b", OpenAIModel, "openai:llama3.1:8b"),  # Ollama tags keep their colon
        ("anthropic:claude-test", AnthropicModel, "anthropic:claude-test"),
    ],
)
async def test_vendor_prefix_picks_the_client(settings_for, setting, kind, name):
    model = load_model(settings_for(NOWHERE, model=setting))
    await model.aclose()
    assert isinstance(model, kind) and model.name == name


@pytest.mark.parametrize("setting", ["gpt-4o", "openai:", "bedrock:claude", ""])
def test_anything_else_names_the_setting(settings_for, setting):
    with pytest.raises(ValueError, match="FRONTDESK_MODEL"):
        load_model(settings_for(NOWHERE, model=setting))


async def test_demo_is_the_scripted_model(settings_for):
    demo = pytest.importorskip("agents.kit.models.demo")
    model = load_model(settings_for(NOWHERE, model="demo"))
    await model.aclose()
    assert isinstance(model, demo.DemoModel)


def test_a_missing_key_for_the_real_api_is_refused_at_start(settings_for):
    settings = settings_for(NOWHERE, openai_base_url=None, openai_api_key=None)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIModel(settings, "gpt-test")


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "7"}) == 7
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 60 < retry_after_seconds({"retry-after": later}) <= 120
