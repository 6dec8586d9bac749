"""Tools from MCP servers: each tool a server lists becomes a `Tool` in the agent's step union.

An agent names its servers in `mcp_servers` or in frontdesk.toml (`[agents.NAME.mcp.SERVER]`,
gateway.config.McpServerConfig). At start-up the runtime's agents connect (a stdio server is
started as a child process, a streamable HTTP one is reached at its URL), list the tools, and
build one `McpTool` subclass per tool, named `SERVER__TOOL`, whose arguments are checked
against the server's own JSON schema. Deny by default: a tool not named in `read_only`
requires a person's approval before each call, exactly like a built-in gated tool.

The connections belong to the runtime (`Runtime.shared["mcp"]`), one per server per process,
shared by every agent and step, and closed on shutdown. A connection found closed is opened
again: a read-only call that met a dead connection is retried once on the new one; a gated
call is never re-sent, since it may have run — the model sees an `error` event saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any, ClassVar

import httpx2
import jsonschema
import mcp.types as mcp_types
import structlog
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ConfigDict, Field, model_serializer, model_validator

from agents.kit.models.base import ToolSpec
from agents.kit.tools import Tool, ToolContext
from gateway.config import McpServerConfig
from gateway.errors import ToolFailed

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = structlog.get_logger("frontdesk.mcp")

# What every model API here takes as a function name: OpenAI ^[a-zA-Z0-9_-]{1,64}$, Anthropic the same
# characters up to 128. MCP itself allows `.` and `/` too. The server's key starts with a letter
# (gateway.config), which the stricter OpenAI-compatible servers want first.
MAX_NAME = 64
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
IDEMPOTENCY_META = "frontdesk/idempotency-key"  # a `_meta` key of our own prefix (MCP reserves only its own)
_SHUTDOWN_WAIT = 10.0  # the SDK's stdio shutdown is bounded at ~6 s (stdin closed, SIGTERM, SIGKILL)


class McpConnection:
    """One MCP session, held open by a task of its own.

    The SDK's client is a nest of anyio task groups that must be entered and left in one
    task, while tool calls come from many worker tasks: the holder task enters it and waits;
    callers share the session; `aclose` (or a lost connection) ends the holder.
    """

    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self.tools: list[mcp_types.Tool] = []
        self._client: Client | None = None
        self._stop = asyncio.Event()
        self._holder: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def target(self) -> str:
        return self.config.url or " ".join(self.config.command or [])

    async def client(self) -> Client:
        """The open session; opened (or opened again, after a loss) here."""
        async with self._lock:
            if self._client is None or self._holder is None or self._holder.done():
                await self._open()
            assert self._client is not None
            return self._client

    async def call(self, tool: str, arguments: dict[str, Any], *, key: str, timeout: float, retry: bool) -> Any:
        """Call `tool`; a server error, timeout or lost connection leaves as ToolFailed.

        `key` (thread id and call id) goes along in `_meta` as `frontdesk/idempotency-key`, stable across
        retries of the call, so a server can run a write once however often it is asked.
        """
        meta: Any = {IDEMPOTENCY_META: key}
        client = await self._ready(retry)
        try:
            return await client.call_tool(tool, arguments, read_timeout_seconds=timeout, meta=meta)
        except MCPError as exc:
            if exc.code != mcp_types.CONNECTION_CLOSED:
                raise _failed(exc, timeout) from None
            await self._lost(client)
            if not retry:
                raise ToolFailed(
                    f"the connection to MCP server {self.name!r} was lost during the call, so it may or may not"
                    " have run; it was not sent again"
                ) from None
        client = await self.client()
        try:
            return await client.call_tool(tool, arguments, read_timeout_seconds=timeout, meta=meta)
        except MCPError as exc:
            raise _failed(exc, timeout) from None

    async def aclose(self) -> None:
        async with self._lock:
            await self._end_holder()

    # ------------------------------------------------------------ internals
    async def _ready(self, retry: bool) -> Client:
        """The session, checked first when the call must not be sent twice.

        A dead session answers every request with CONNECTION_CLOSED, whether it died before the
        request or during it. One `tools/list` (uncached; `ping` is gone from the 2026-07-28
        protocol) tells the two apart for a call that is not retried; only gated calls pay for it.
        """
        client = await self.client()
        if retry:
            return client
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await client.list_tools(cache_mode="bypass")
        except (MCPError, TimeoutError):
            await self._lost(client)
            client = await self.client()
        return client

    async def _lost(self, client: Client) -> None:
        async with self._lock:
            if self._client is client:  # not already replaced by another caller
                log.warning("MCP server connection lost; reconnecting on next use", server=self.name)
                await self._end_holder()

    async def _end_holder(self) -> None:
        """Let the holder leave the SDK's contexts (the stdio child is stopped there); cancel it if stuck."""
        self._stop.set()
        holder, self._holder, self._client = self._holder, None, None
        if holder is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(holder), _SHUTDOWN_WAIT)
            if not holder.done():
                holder.cancel()
                with contextlib.suppress(BaseException):
                    await holder

    async def _open(self) -> None:
        await self._end_holder()
        self._stop = asyncio.Event()
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._holder = asyncio.create_task(self._hold(ready, self._stop), name=f"mcp-{self.name}")
        try:
            self._client = await asyncio.wait_for(asyncio.shield(ready), self.config.connect_timeout)
        except TimeoutError:
            ready.cancel()
            self._holder.cancel()
            raise ToolFailed(
                f"MCP server {self.name!r} ({self.target}) did not answer within {self.config.connect_timeout:g}s"
            ) from None
        except Exception as exc:
            raise ToolFailed(f"MCP server {self.name!r} ({self.target}) could not be reached: {_leaf(exc)}") from None

    async def _hold(self, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
        try:
            async with self._transport() as transport, Client(transport) as client:
                self.tools = await _list_tools(client)
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ToolFailed("cancelled"))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP session ended", server=self.name, error=_leaf(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[Any]:
        cfg = self.config
        if cfg.command:
            # The SDK gives a child only a few safe variables (PATH, HOME, ...); secrets come by name.
            # This reads os.environ on purpose: the names are the operator's, the values never enter config.
            env = {**cfg.env, **{name: os.environ[name] for name in cfg.env_from if name in os.environ}}
            params = StdioServerParameters(command=cfg.command[0], args=cfg.command[1:], env=env or None, cwd=cfg.cwd)
            yield stdio_client(params)
            return
        assert cfg.url is not None
        headers = {header: os.environ[var] for header, var in cfg.headers_from.items() if var in os.environ}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
            yield streamable_http_client(cfg.url, http_client=http)


class McpPool:
    """The process's MCP connections, one per server (same command, or same URL), kept in `Runtime.shared`."""

    def __init__(self) -> None:
        self._connections: dict[str, McpConnection] = {}

    @classmethod
    def of(cls, runtime: Runtime) -> McpPool:
        pool = runtime.shared.get("mcp")
        if not isinstance(pool, McpPool):
            pool = runtime.shared["mcp"] = McpPool()
        return pool

    def connection(self, name: str, config: McpServerConfig) -> McpConnection:
        key = json.dumps(
            config.model_dump(mode="json", include={"command", "url", "cwd", "env", "env_from", "headers_from"})
        )
        found = self._connections.get(key)
        if found is None:
            found = self._connections[key] = McpConnection(name, config)
        return found

    async def aclose(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.aclose() for c in connections))


class McpTool(Tool):
    """Base of the tools built from an MCP server's listing; its arguments are the whole call."""

    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = Field(default_factory=dict)

    connection: ClassVar[McpConnection]
    remote_name: ClassVar[str]
    description: ClassVar[str]
    input_schema: ClassVar[dict[str, Any]]
    validator: ClassVar[Any]
    timeout: ClassVar[float]

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        # The model sends the server's arguments as they are; the server's schema judges them.
        errors = sorted(cls.validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            raise ValueError("; ".join(_said(e) for e in errors[:5]))
        return {"arguments": data}

    @model_serializer(mode="plain")
    def _dump(self) -> dict[str, Any]:
        return self.arguments

    @classmethod
    def spec(cls) -> ToolSpec:
        return ToolSpec(name=cls.name, description=cls.description, parameters=cls.input_schema)

    async def run(self, ctx: ToolContext) -> Any:
        result = await self.connection.call(
            self.remote_name,
            self.arguments,
            key=ctx.idempotency_key,
            timeout=self.timeout,
            retry=not self.requires_approval,
        )
        if result.is_error:
            raise ToolFailed(_text(result) or f"{self.remote_name} reported an error")
        if result.structured_content is not None:
            return result.structured_content
        return _text(result)


async def mcp_tools(runtime: Runtime, servers: dict[str, McpServerConfig]) -> dict[str, list[type[McpTool]]]:
    """The tools of each server reached (connected once per process); one not reached is logged and left out."""
    pool = McpPool.of(runtime)
    built: dict[str, list[type[McpTool]]] = {}
    for server, config in servers.items():
        connection = pool.connection(server, config)
        try:
            await connection.client()
        except ToolFailed as exc:
            log.error("MCP server unavailable; its tools are left out for now", server=server, error=str(exc))
            continue
        built[server] = tool_classes(server, config, connection)
    return built


def tool_classes(server: str, config: McpServerConfig, connection: McpConnection) -> list[type[McpTool]]:
    """One McpTool subclass per tool the server lists (and `config.tools` allows)."""
    classes: list[type[McpTool]] = []
    taken: set[str] = set()
    listed = {t.name for t in connection.tools}
    for unknown in sorted(set(config.read_only) - listed):
        log.warning("read_only names a tool the MCP server does not list", server=server, tool=unknown)
    for tool in connection.tools:
        if config.tools is not None and tool.name not in config.tools:
            continue
        schema = {k: v for k, v in tool.input_schema.items() if k != "title"}
        try:
            validator = jsonschema.validators.validator_for(schema)(schema)
            validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            log.error(
                "MCP tool has an invalid input schema; left out", server=server, tool=tool.name, error=exc.message
            )
            continue
        name = tool_name(server, tool.name, taken)
        taken.add(name)
        attrs = {
            "name": name,
            "__doc__": tool.description or tool.title or tool.name,
            "__module__": __name__,
            "description": (tool.description or tool.title or tool.name).strip(),
            "requires_approval": tool.name not in config.read_only,
            "connection": connection,
            "remote_name": tool.name,
            "input_schema": schema,
            "validator": validator,
            "timeout": config.timeout,
        }
        classes.append(type(f"Mcp_{name}", (McpTool,), attrs))
    return classes


def tool_name(server: str, tool: str, taken: Collection[str] = ()) -> str:
    """`server__tool` in the characters and length model APIs accept; a short hash keeps it unique."""
    name = f"{server}__{_NOT_ALLOWED.sub('_', tool)}"
    if len(name) <= MAX_NAME and name not in taken:
        return name
    digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9]}_{digest}"


# ---------------------------------------------------------------- helpers


async def _list_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a server whose cursor never ends cannot hang start-up
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _failed(exc: MCPError, timeout: float) -> ToolFailed:
    if exc.code == mcp_types.REQUEST_TIMEOUT:
        return ToolFailed(f"no answer within {timeout:g}s (the server may still finish the call)")
    return ToolFailed(f"the MCP server refused the call: {exc.message}")


def _text(result: Any) -> str:
    parts: list[str] = []
    for block in result.content:
        match block:
            case mcp_types.TextContent():
                parts.append(block.text)
            case mcp_types.ImageContent() | mcp_types.AudioContent():
                parts.append(f"[{block.type}: {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
            case mcp_types.ResourceLink():
                parts.append(f"[resource: {block.uri}]")
            case mcp_types.EmbeddedResource():
                text = getattr(block.resource, "text", None)
                parts.append(text if text is not None else f"[resource: {block.resource.uri}]")
            case _:
                parts.append(f"[{getattr(block, 'type', 'content')}]")
    return "\n".join(parts)


def _said(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def _leaf(exc: BaseException) -> str:
    """The first real error inside anyio's exception groups, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
