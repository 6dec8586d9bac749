"""Anthropic Messages with one forced tool call (`tool_choice: any`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anthropic

from agents.kit.models import retry_after_seconds
from agents.kit.models.base import ModelError, ModelReply, ToolSpec, Usage

if TYPE_CHECKING:
    from anthropic.types import Message

    from gateway.settings import Settings

DEFAULT_BASE_URL = "https://api.anthropic.com"
# One step is a short tool call; the API requires a cap, and this one leaves room for
# a long `done_for_now` answer without letting a runaway turn run for minutes.
MAX_TOKENS = 4096


class AnthropicModel:
    """A Claude model behind the Anthropic Messages API (or a proxy speaking it)."""

    def __init__(self, settings: Settings, model_name: str) -> None:
        if settings.anthropic_api_key is None and not settings.anthropic_base_url:
            raise ValueError("ANTHROPIC_API_KEY is not set")
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        self.name = f"anthropic:{model_name}"
        self._model = model_name
        self._timeout = settings.model_timeout
        self.endpoint = settings.anthropic_base_url or DEFAULT_BASE_URL
        # Explicit base URL and key: without them the SDK reads the environment and
        # on-disk profiles, and Settings is meant to be the only source.
        self._client = anthropic.AsyncAnthropic(
            base_url=settings.anthropic_base_url or DEFAULT_BASE_URL,
            api_key=key or "not-needed",
            timeout=settings.model_timeout,
            max_retries=settings.model_retries,
        )

    @property
    def accepts(self) -> str:
        return "tool_choice=any, disable_parallel_tool_use"  # the Messages API takes one shape

    async def next_step(self, system: str, context: str, tools: list[ToolSpec]) -> ModelReply:
        """Ask for the next step; the reply carries the first tool_use block, if any."""
        try:
            message = await self._client.messages.create(
                model=self._model,
                max_tokens=MAX_TOKENS,
                system=system,
                messages=[{"role": "user", "content": context}],
                tools=[{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools],
                tool_choice={"type": "any", "disable_parallel_tool_use": True},
            )
        except anthropic.AnthropicError as exc:
            raise _model_error(exc, self._timeout) from exc
        return _to_reply(message, self._model)

    async def aclose(self) -> None:
        await self._client.close()


def _to_reply(message: Message, model_name: str) -> ModelReply:
    usage = message.usage
    # Cached prompt tokens are counted apart from input_tokens; the budget wants them all.
    cached = (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    used = Usage(usage.input_tokens + cached, usage.output_tokens)
    texts = [block.text for block in message.content if block.type == "text"]
    text = "\n".join(texts) if texts else None
    call = next((block for block in message.content if block.type == "tool_use"), None)
    model = message.model or model_name
    if call is None:
        return ModelReply(tool=None, arguments=None, usage=used, text=text, model=model)
    return ModelReply(tool=call.name, arguments=call.input, usage=used, text=text, model=model)


def _model_error(exc: anthropic.AnthropicError, timeout: float) -> ModelError:
    if isinstance(exc, anthropic.APIStatusError):
        return ModelError(
            f"anthropic: {exc.message}",
            status=exc.status_code,
            retry_after=retry_after_seconds(exc.response.headers),
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return ModelError(f"anthropic: no answer within {timeout:g} s")
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError(f"anthropic: cannot reach the server: {exc.__cause__ or exc}")
    return ModelError(f"anthropic: {exc}")
