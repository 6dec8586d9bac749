"""Chat Completions with one forced tool call, for OpenAI and every server that speaks its API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai
from openai.types.chat import ChatCompletion

from agents.kit.models import retry_after_seconds
from agents.kit.models.base import ModelError, ModelReply, ToolSpec, Usage

try:  # the SDK's own HTTP client: httpx2 in recent releases, httpx before
    from httpx2 import Limits as _Limits
except ImportError:  # pragma: no cover
    from httpx import Limits as _Limits

if TYPE_CHECKING:
    from gateway.settings import Settings

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Request shapes, strictest first. Compatible servers (vLLM, Ollama, llama.cpp's server,
# LM Studio, LiteLLM in front of another vendor) each accept a different subset of these
# parameters and refuse the rest with a 400 or 422, so we drop one at a time. The last
# shape sends no tool_choice at all, for proxies that refuse the parameter outright.
_SHAPES: tuple[dict[str, Any], ...] = (
    {"tool_choice": "required", "parallel_tool_calls": False},
    {"tool_choice": "required"},
    {"tool_choice": "auto"},
    {},
)
_REFUSED_SHAPE = (400, 422)


class OpenAIModel:
    """A model behind an OpenAI-compatible Chat Completions endpoint."""

    def __init__(self, settings: Settings, model_name: str) -> None:
        if settings.openai_api_key is None and not settings.openai_base_url:
            raise ValueError("OPENAI_API_KEY is not set (for a local server, set OPENAI_BASE_URL instead)")
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        self.name = f"openai:{model_name}"
        self._model = model_name
        self._timeout = settings.model_timeout
        # The SDK's aiohttp transport rather than its default httpx one: the per-call CPU of
        # httpcore + h11 + anyio was a quarter of a step, and httpcore's pool does work in
        # proportion to its open connections on every request, which a worker with a thousand
        # calls in flight pays a thousand times over (benchmarks/, scenarios 3 and 4). One
        # connection per call in flight, up to the worker's concurrency.
        self._client = openai.AsyncOpenAI(
            # Explicit base URL and key, so the SDK never falls back to reading the environment
            # itself; local servers ignore the key but the SDK insists on one.
            base_url=settings.openai_base_url or DEFAULT_BASE_URL,
            api_key=key or "not-needed",
            timeout=settings.model_timeout,
            max_retries=settings.model_retries,  # the SDK's retries honour Retry-After
            http_client=openai.DefaultAioHttpClient(
                limits=_Limits(max_connections=settings.worker_concurrency, max_keepalive_connections=settings.worker_concurrency),
                timeout=settings.model_timeout,
            ),
        )
        self._shape = 0  # index into _SHAPES of the first shape this server may accept

    async def next_step(self, system: str, context: str, tools: list[ToolSpec]) -> ModelReply:
        """Ask for the next step; the reply carries the first tool call, if any."""
        request = {
            "model": self._model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": context}],
            "tools": [_function(tool) for tool in tools],
        }
        return await self._ask(self._client, request, self._shape)

    async def _ask(self, client: openai.AsyncOpenAI, request: dict[str, Any], shape: int) -> ModelReply:
        refused = None
        while True:
            try:
                # The SDK's plain POST: `chat.completions.create` would first walk every node of
                # the tools' JSON schemas against its type hints, on every call — a sixth of a
                # step's CPU (benchmarks/, scenario 3). Same body, retries and errors.
                completion = await client.post("/chat/completions", body={**request, **_SHAPES[shape]}, cast_to=ChatCompletion)
                break
            except openai.APIStatusError as exc:
                # A 400 may also mean the request itself is bad (say, too long); then every
                # shape fails alike and the first refusal is the one worth reporting.
                if exc.status_code not in _REFUSED_SHAPE:
                    raise _model_error(exc, self._timeout) from exc
                refused = refused or exc
                if shape + 1 == len(_SHAPES):
                    raise _model_error(refused, self._timeout) from exc
                shape += 1
            except openai.OpenAIError as exc:
                raise _model_error(exc, self._timeout) from exc
        # Remember only a shape that worked; max() because concurrent turns share this client.
        self._shape = max(self._shape, shape)
        return _to_reply(completion, self._model)

    async def aclose(self) -> None:
        await self._client.close()


def _function(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _to_reply(completion: ChatCompletion, model_name: str) -> ModelReply:
    if not isinstance(completion, ChatCompletion):
        # A proxy's HTML error page with a 200: the SDK hands back the text as it came.
        raise ModelError(f"the model server answered with something other than a chat completion: {str(completion)[:200]!r}")
    usage = completion.usage
    used = Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else Usage()
    model = completion.model or model_name
    if not completion.choices:
        return ModelReply(tool=None, arguments=None, usage=used, model=model)
    message = completion.choices[0].message
    # Custom (free-text) tool calls have no `function`; we never offer such tools.
    calls = [call for call in message.tool_calls or () if getattr(call, "function", None)]
    if not calls:
        return ModelReply(tool=None, arguments=None, usage=used, text=message.content, model=model)
    # A server that ignored parallel_tool_calls may send several; the loop takes one step a turn.
    function = calls[0].function
    return ModelReply(
        tool=function.name, arguments=function.arguments, usage=used, text=message.content, model=model
    )


def _model_error(exc: openai.OpenAIError, timeout: float) -> ModelError:
    if isinstance(exc, openai.APIStatusError):
        return ModelError(
            f"openai: {exc.message}",
            status=exc.status_code,
            retry_after=retry_after_seconds(exc.response.headers),
        )
    refused = _refused(exc)
    if refused is not None:
        return ModelError(f"openai: cannot reach the server: {refused}")
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(f"openai: no answer within {timeout:g} s")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(f"openai: cannot reach the server: {exc.__cause__ or exc}")
    return ModelError(f"openai: {exc}")


def _refused(exc: BaseException) -> OSError | None:
    """The connection error behind `exc`, if any.

    The SDK's aiohttp transport reports a refused connection as a connect *timeout*; the
    cause chain still holds the OSError that says what happened.
    """
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
