"""Model clients: the shared types, and `load_model` to pick one from FRONTDESK_MODEL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agents.kit.models.base import Model, ModelError, ModelReply, ToolSpec, Usage
from gateway.retry import retry_after

# An agent's demo script: (rendered context, offered tool names) -> (tool, arguments).
DemoScript = Callable[[str, list[str]], tuple[str, dict[str, Any]]]

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["Model", "ModelError", "ModelReply", "ToolSpec", "Usage", "load_model", "retry_after_seconds"]


def load_model(settings: Settings, *, demo: DemoScript | None = None) -> Model:
    """The client FRONTDESK_MODEL names: `openai:<model>`, `anthropic:<model>` or `demo`.

    `demo` is the agent's script for the scripted demo model; real models ignore it.
    """
    spec = settings.model.strip()
    # Split at the first colon only: Ollama model names carry their own (`llama3.1:8b`).
    vendor, _, name = spec.partition(":")
    vendor = vendor.lower()
    # Vendor modules are imported here, not at the top, so a demo run never loads an SDK.
    if spec.lower() == "demo":
        from agents.kit.models.demo import DemoModel

        return DemoModel(settings, demo)
    if vendor == "openai" and name:
        from agents.kit.models.openai import OpenAIModel

        return OpenAIModel(settings, name)
    if vendor == "anthropic" and name:
        from agents.kit.models.anthropic import AnthropicModel

        return AnthropicModel(settings, name)
    raise ValueError(
        f"FRONTDESK_MODEL={spec!r} is not a model this gateway knows; use openai:<model>, anthropic:<model> or demo"
    )


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long a refusing server asked us to wait, in seconds, if it said (gateway.retry's parser)."""
    return retry_after(headers)
