"""Chat Completions with one forced tool call, for OpenAI and every server that speaks its API.

The request is one POST of JSON and the answer one JSON object, so this client speaks the
wire format itself over aiohttp rather than through the `openai` SDK. Measured on the
benchmark machine (benchmarks/, scenarios 3 and 4): a call through the SDK cost its caller
about 840 µs of CPU, the same call through aiohttp about 220 µs — the SDK's per-request
option models, deep copies, URL and header handling were a third of an agent step, and with
a thousand threads waiting on a slow model a worker's CPU is what bounds how many it keeps in
flight. What the SDK gave beyond the bytes is kept here: the bearer key, a timeout per
request, retries with backoff that honour `Retry-After` for 408/409/429/5xx and lost
connections, and the server's own error message.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import structlog

from agents.kit.models import retry_after_seconds
from agents.kit.models.base import ModelError, ModelReply, ToolSpec, Usage
from agents.kit.models.textcalls import parse_text_call, step_schema
from gateway.retry import backoff

if TYPE_CHECKING:
    from gateway.settings import Settings

DEFAULT_BASE_URL = "https://api.openai.com/v1"

log = structlog.get_logger("frontdesk.model")

# Request shapes, strictest first. Compatible servers (vLLM, Ollama, llama.cpp's server,
# LM Studio, LiteLLM in front of another vendor) each accept a different subset of these
# parameters. Most refuse the rest with a 400 or 422; some crash on it instead:
# llama-cpp-python's chatml function-calling handler asserts tool_choice == "auto" and answers
# 500 to "required" (issue 15: 27 of 27 calls). So a shape is dropped on a refusal, and on a
# 5xx that a simpler shape does not meet. The fourth shape sends no tool_choice (for proxies
# that refuse the parameter outright); the last two send no tools at all and ask for the step as
# JSON matching the step union's schema, for servers that support neither: OpenAI's
# `json_schema` form, then llama-cpp-python's own `json_object` with a `schema` (its server
# answers 500 "Input should be 'text' or 'json_object'" to the first; measured, 0.3.36).
_JSON_STEP = "json_step"
_SHAPES: tuple[dict[str, Any], ...] = (
    {"tool_choice": "required", "parallel_tool_calls": False},
    {"tool_choice": "required"},
    {"tool_choice": "auto"},
    {},
    {_JSON_STEP: "json_schema"},
    {_JSON_STEP: "json_object"},
)
_REFUSED_SHAPE = (400, 422)
# What each server (base URL and model) was found to accept, shared by every client in the
# process: a thousand threads on one server learn it once, and it is logged once.
_LEARNED: dict[str, int] = {}
# A 5xx is a refusal only when it recurs: one flaky 500 must not downgrade a server for good.
# Turns on which the settled shape met a 5xx and a simpler one then passed, per server.
_STRIKES: dict[str, int] = {}
_STRIKES_TO_LEARN = 2
_RETRIED = (408, 409, 429)  # and every 5xx, as OpenAI's own clients do
_BACKOFF, _BACKOFF_MAX, _RETRY_AFTER_MAX = 0.5, 8.0, 60.0


class OpenAIModel:
    """A model behind an OpenAI-compatible Chat Completions endpoint."""

    def __init__(self, settings: Settings, model_name: str) -> None:
        if settings.openai_api_key is None and not settings.openai_base_url:
            raise ValueError("OPENAI_API_KEY is not set (for a local server, set OPENAI_BASE_URL instead)")
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        self.name = f"openai:{model_name}"
        self._model = model_name
        self.endpoint = (settings.openai_base_url or DEFAULT_BASE_URL).rstrip("/")
        self._url = self.endpoint + "/chat/completions"
        self._headers = {
            # Local servers ignore the key, but some proxies insist on the header.
            "Authorization": f"Bearer {key or 'not-needed'}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "frontdesk",
        }
        self._timeout = settings.model_timeout
        self._retries = settings.model_retries
        self._connections = settings.worker_concurrency  # one per call in flight
        self._session: aiohttp.ClientSession | None = None
        self._server = f"{self._url} {model_name}"
        self._tools: dict[tuple[int, ...], _Encoded] = {}

    @property
    def shape(self) -> dict[str, Any]:
        """The request shape this server settled on (the strictest until one was refused)."""
        return _SHAPES[_LEARNED.get(self._server, 0)]

    @property
    def accepts(self) -> str:
        # Read on every turn (the health page is told when it changes): a lookup, not a format.
        return _DESCRIBED[_LEARNED.get(self._server, 0)]

    async def next_step(self, system: str, context: str, tools: list[ToolSpec]) -> ModelReply:
        """Ask for the next step; the reply carries the first tool call, if any."""
        messages = json.dumps([{"role": "system", "content": system}, {"role": "user", "content": context}])
        start = shape = _LEARNED.get(self._server, 0)
        refused: ModelError | None = None  # the first refusal: a 400 may mean the request itself is bad
        failed: ModelError | None = None  # the first 5xx: refusal or outage, told apart below
        encoded = self._encoded(tools)
        while True:
            last = shape + 1 == len(_SHAPES)
            # While a simpler shape is left to try, a 5xx gets no retries: the next shape tells
            # a refusal (it passes) from an outage (it fails too), without a retry storm.
            retried = last and failed is None
            try:
                raw = await self._post(self._body(shape, messages, encoded), retry_5xx=retried)
                break
            except ModelError as exc:
                if exc.status in _REFUSED_SHAPE:
                    refused = refused or exc
                elif exc.status is not None and exc.status >= 500:
                    failed = failed or exc
                else:
                    raise  # a timeout, a lost connection, 401, 429 after its retries: not the shape's doing
                if not last:
                    shape += 1
                    continue
                if failed is not None and refused is None and not retried:
                    # Every shape met a 5xx: the server is down, not picky. Retry the shape this
                    # server settled on, with backoff, as any outage is retried.
                    raw = await self._post(self._body(start, messages, encoded), retry_5xx=True)
                    shape = start
                    break
                raise (refused or failed or exc) from exc
        if shape > start:
            if refused is None and failed is not None:
                _STRIKES[self._server] = _STRIKES.get(self._server, 0) + 1
                if _STRIKES[self._server] < _STRIKES_TO_LEARN:
                    # Not yet shown to recur: this turn's 5xx stands (an `error` event, as any
                    # outage is), and the next turn tries the settled shape again.
                    raise failed
            self._learn(shape, refused or failed)
        return _to_reply(raw, self._model, encoded.names)

    def _body(self, shape: int, messages: str, encoded: _Encoded) -> bytes:
        options = {k: v for k, v in _SHAPES[shape].items() if k != _JSON_STEP}
        head = json.dumps({"model": self._model, **options})
        form = _SHAPES[shape].get(_JSON_STEP)
        if form == "json_schema":
            # No tools: the step comes back as content, constrained to the step union's schema.
            step = f'"response_format": {{"type": "json_schema", "json_schema": {{"name": "next_step", "schema": {encoded.schema}}}}}'
        elif form == "json_object":
            step = f'"response_format": {{"type": "json_object", "schema": {encoded.schema}}}'
        else:
            step = f'"tools": {encoded.functions}'
        return f'{head[:-1]}, "messages": {messages}, {step}}}'.encode()

    def _learn(self, shape: int, why: ModelError | None) -> None:
        # max(): concurrent turns learn at once; a shape never gets stricter again in this process.
        if shape > _LEARNED.get(self._server, 0):
            _LEARNED[self._server] = shape
            _STRIKES.pop(self._server, None)
            log.warning(
                "model server refused a request shape; falling back",
                model=self.name,
                url=self._url,
                shape=_describe(_SHAPES[shape]),
                server_said=str(why)[:500] if why else None,
            )

    def _encoded(self, tools: list[ToolSpec]) -> _Encoded:
        # An agent offers the same tools every turn (their specs are built once per class): their
        # JSON, a few KB of schemas, is encoded once too. Keyed by the specs' identities; the
        # entry holds the specs, so no id is reused meanwhile.
        key = tuple(map(id, tools))
        hit = self._tools.get(key)
        if hit is None:
            hit = self._tools[key] = _Encoded(
                specs=list(tools),
                functions=json.dumps([_function(tool) for tool in tools]),
                schema=json.dumps(step_schema([(tool.name, tool.parameters) for tool in tools])),
                names=frozenset(tool.name for tool in tools),
            )
        return hit

    async def _post(self, body: bytes, *, retry_5xx: bool) -> bytes:
        """The answer's body; retried with backoff where the failure may pass, else a ModelError."""
        attempt = 0
        while True:
            try:
                async with self._http().post(self._url, data=body, headers=self._headers) as response:
                    raw = await response.read()
                if response.status < 300:
                    return raw
                error = ModelError(
                    f"openai: {response.status} {_message(raw)}",
                    status=response.status,
                    retry_after=retry_after_seconds(response.headers),
                )
                again = response.status in _RETRIED or (retry_5xx and response.status >= 500)
            except TimeoutError:
                error, again = ModelError(f"openai: no answer within {self._timeout:g} s"), True
            except aiohttp.ClientError as exc:
                error, again = ModelError(f"openai: cannot reach the server: {exc}"), True
            if not again or attempt >= self._retries:
                raise error
            # A server's ask beyond a minute is cut to one: a model step must not stall for long.
            wait = min(error.retry_after, _RETRY_AFTER_MAX) if error.retry_after is not None else None
            await asyncio.sleep(backoff(attempt, _BACKOFF, _BACKOFF_MAX, wait))
            attempt += 1

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop it was made in.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _message(raw: bytes) -> str:
    """What an error answer says: OpenAI's {"error": {"message"}}, else the start of the body."""
    try:
        error = json.loads(raw).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:1000]
    except (ValueError, AttributeError):
        pass
    return raw[:300].decode("utf-8", "replace")


def _function(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


class _Encoded(NamedTuple):
    """An agent's tools as the wire needs them, encoded once (the specs are kept so no id is reused)."""

    specs: list[ToolSpec]
    functions: str  # the `tools` array
    schema: str  # the step union, for the no-tools shape
    names: frozenset[str]  # for reading a call written as text


def _describe(shape: dict[str, Any]) -> str:
    if shape.get(_JSON_STEP):
        return f"no tools; response_format {shape[_JSON_STEP]} with the steps' schema"
    return ", ".join(f"{k}={v}" for k, v in shape.items()) or "tools without tool_choice"


def _to_reply(raw: bytes, model_name: str, tool_names: frozenset[str]) -> ModelReply:
    try:
        completion = json.loads(raw)
        choices = completion["choices"]
        if not isinstance(choices, list):
            raise TypeError("choices is not a list")
    except (ValueError, TypeError, KeyError):
        # A proxy's HTML error page with a 200, or JSON of another shape.
        raise ModelError(
            f"the model server answered with something other than a chat completion: {raw[:200]!r}"
        ) from None
    usage = completion.get("usage") or {}
    used = Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
    model = completion.get("model") or model_name
    if not choices:
        return ModelReply(tool=None, arguments=None, usage=used, model=model)
    first = choices[0] if isinstance(choices[0], dict) else {}
    message = given if isinstance(given := first.get("message"), dict) else {}
    # Custom (free-text) tool calls have no `function`; we never offer such tools.
    calls = [
        call
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict) and isinstance(call.get("function"), dict)
    ]
    if not calls:
        text = message.get("content") if isinstance(message.get("content"), str) else None
        # Small and local models often write the call as text; read it where it is unambiguous.
        found = parse_text_call(text, tool_names)
        if found is not None:
            return ModelReply(tool=found[0], arguments=found[1], usage=used, text=text, model=model)
        return ModelReply(tool=None, arguments=None, usage=used, text=text, model=model)
    # A server that ignored parallel_tool_calls may send several; the loop takes one step a turn.
    function = calls[0]["function"]
    return ModelReply(
        tool=function.get("name"),
        arguments=function.get("arguments"),
        usage=used,
        text=message.get("content"),
        model=model,
    )


_DESCRIBED = tuple(map(_describe, _SHAPES))
