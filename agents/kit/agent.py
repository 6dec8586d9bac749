"""The loop (factors 1, 6-9, 12): one turn per call, a plain switch over the next step.

`Agent.step(thread, event) -> thread` is the stateless reducer: it appends the
event and, while the thread is running, takes at most one turn — render the
context, ask the model for exactly one tool call, validate it, and `match` on it:

- a plain tool runs; `tool_call` and `tool_result` are appended and the thread
  stays running (the worker saves and queues the next turn);
- a tool that requires approval appends `approval_requested` and pauses *before*
  running; an approval runs the stored call (never anything the model said
  later), a denial goes into the context for the model's next turn;
- `request_human_input` and `done_for_now` append their event and pause; the
  worker turns them into outbound messages.

Every failure the model can act on — no tool call, an unknown tool, bad JSON,
arguments that fail validation, a tool that raised, the model API itself — is
appended as an `error` event it sees next turn. After three in a row, or too
many turns without a person, the thread escalates to a person and pauses.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, assert_never

import jinja2
import structlog
from pydantic import ValidationError

from agents.kit.context import render_context
from agents.kit.evals import cases
from agents.kit.models import load_model
from agents.kit.models.base import Model, ModelError, ModelReply, ToolSpec
from agents.kit.tools import BUILTIN_TOOLS, DoneForNow, RequestHumanInput, Tool, ToolContext
from gateway import metrics
from gateway.config import McpServerConfig, parse_identity
from gateway.errors import StepError, Unavailable
from gateway.events import (
    ApprovalDecision,
    ApprovalRequested,
    ContextFetched,
    Error,
    Thread,
    ToolCall,
    ToolResult,
    Usage,
    last_active,
    utcnow,
)
from gateway.events import DoneForNow as DoneEvent
from gateway.events import RequestHumanInput as AskEvent
from gateway.settings import PluginSettings, Settings, plugin_settings
from gateway.store import modelhealth

if TYPE_CHECKING:
    from agents.kit.evals.cases import Step
    from gateway.runtime import Runtime

MAX_ERRORS_IN_A_ROW = 3
MCP_RETRY_SECONDS = 30.0  # how often a step tries an MCP server that was not reached again
Prefetch = Callable[[Thread, ToolContext], Awaitable[Any]]
log = structlog.get_logger("frontdesk.agent")


@dataclass(frozen=True)
class TurnRequest:
    """One turn's request to the model (`Agent.request`), as the loop and the evals send it."""

    system: str
    context: str
    tools: list[ToolSpec]


class Agent:
    """A small, focused agent: its prompt file, its tools, its model, its loop.

    Subclass it (or instantiate it) with a `name`, a `description`, the `tools`
    it may call, the `prompt` template beside its code, and optional `prefetch`
    functions whose results land in the context before the first model call.
    An agent with settings of its own names a `PluginSettings` subclass in
    `settings_class`; its tools and prefetches find them in `ctx.agent_settings`.
    """

    name: str = ""
    description: str = ""
    toolbox: tuple[type[Tool], ...] = ()
    prompt: Path | None = None
    prefetch: dict[str, Prefetch] = {}
    settings_class: ClassVar[type[PluginSettings] | None] = None
    # MCP servers whose tools join the toolbox (agents/kit/mcp.py); frontdesk.toml's [agents.NAME.mcp.*] add to them.
    mcp_servers: ClassVar[dict[str, McpServerConfig]] = {}

    def __init__(self, runtime: Runtime, *, model: Model | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.own_settings = plugin_settings(self.settings_class, self.settings) if self.settings_class else None
        cfg = runtime.config.agent(self.name)
        self.contacts = dict(cfg.contacts)
        self.model = model or self._shared_model(
            self.settings.model_copy(update={"model": cfg.model}) if cfg.model else self.settings
        )
        self._steps = {tool.name: tool for tool in (*self.toolbox, *BUILTIN_TOOLS)}
        self._mcp_pending = {**self.mcp_servers, **cfg.mcp}  # servers whose tools are not in _steps yet
        self._mcp_lock = asyncio.Lock()
        self._mcp_retry_at = 0.0
        self._template = self._load_template()
        self._home = Path(self.prompt or ".").parent  # a variant with another prompt keeps its cases
        self._reported: str | None = None  # the shape last shown on the health page by this process

    def _shared_model(self, settings: Settings) -> Model:
        """The runtime's client for this agent's model spec: one per spec, closed by the runtime.

        The demo model is not a client but this agent's own script, so each agent has its own.
        """
        spec = settings.model.strip()
        key = ("model", spec, self.name) if spec.lower() == "demo" else ("model", spec)
        return self.runtime.clients.get(key, lambda: load_model(settings, demo=self.demo))

    # ------------------------------------------------------------ overridable
    def demo(self, context: str, tools: list[str]) -> tuple[str, dict[str, Any]]:
        """What the scripted `demo` model answers for this agent (agents override it)."""
        return "done_for_now", {"message": "I am the demo model and have no script for this agent."}

    def render_context(self, thread: Thread) -> str:
        """The context window; override to shape it differently (factor 3)."""
        return render_context(thread, self.settings.context_budget)

    def render_prompt(self, thread: Thread) -> str:
        """The system prompt from the agent's own template (factor 2)."""
        return self._template.render(
            agent=self,
            tools=[t.spec() for t in self._steps.values()],
            contacts=sorted(self.contacts),
            thread=thread,
            now=utcnow(),
        )

    @property
    def evals_dir(self) -> Path:
        """Where this agent's eval cases live (`frontdesk eval`): `evals/` beside its prompt, so beside its code."""
        return self._home / "evals"

    def model_turns(self, thread: Thread) -> list[int]:
        """The events of `thread` its model's answers made (agents.kit.evals.cases)."""
        return cases.model_turns(thread)

    def save_eval_case(
        self, thread: Thread, turn: int, *, expect: dict[str, Any] | None = None, note: str | None = None
    ) -> Path:
        """Save `thread` cut at event `turn` as an eval case in `evals_dir` (the dashboard's "save as test")."""
        return cases.save_case(self, cases.cut(self, thread, turn, expect=expect, note=note))

    def same_step(self, expected: Step, actual: Step) -> bool:
        """Whether `actual` passes an eval case expecting `expected` (agents.kit.evals).

        The same tool with equal arguments (or the same error kind); override it for a
        tolerance or a subset of the fields that matter.
        """
        return expected == actual

    # ------------------------------------------------------------ protocol
    def tools(self) -> list[dict[str, Any]]:
        return [tool.describe() for tool in self._steps.values()]

    async def start(self) -> None:
        """Reach the agent's MCP servers and add their tools (the runtime calls it once, at start-up)."""
        await self._reach_mcp(force=True)

    async def _reach_mcp(self, *, force: bool = False) -> None:
        """Add the tools of the MCP servers not reached yet; their sessions belong to the runtime.

        A server still missing is tried again at a step, at most every MCP_RETRY_SECONDS, so a
        server that does not answer holds up one step per interval, not every step.
        """
        if not self._mcp_pending:
            return
        from agents.kit.mcp import mcp_tools  # the MCP SDK is imported only by agents that use it

        async with self._mcp_lock:
            if not self._mcp_pending or (not force and time.monotonic() < self._mcp_retry_at):
                return
            for server, tools in (await mcp_tools(self.runtime, dict(self._mcp_pending))).items():
                del self._mcp_pending[server]
                for tool in tools:
                    if tool.name in self._steps:
                        log.error("an MCP tool's name is taken; it is left out", agent=self.name, tool=tool.name)
                        continue
                    self._steps[tool.name] = tool
            self._mcp_retry_at = time.monotonic() + MCP_RETRY_SECONDS

    async def step(self, thread: Thread, event: Any | None) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        if thread.status != "running":
            return thread
        if self._mcp_pending and time.monotonic() >= self._mcp_retry_at:
            await self._reach_mcp()
        last = last_active(thread.events)
        if last is not None and isinstance(last[1], ApprovalDecision) and last[1].approved:
            return await self._run_approved(thread, last[1].call_id)
        if self.prefetch and not any(isinstance(e, ContextFetched) for e in thread.events):
            thread = await self._prefetch(thread)
        if _errors_in_a_row(thread) >= MAX_ERRORS_IN_A_ROW:
            return self._escalate(thread, "I keep running into errors")
        if _turns_since_person(thread, self.settings.max_steps) >= self.settings.max_steps:
            return self._escalate(thread, f"I have taken {self.settings.max_steps} steps without finishing")
        return await self._turn(thread)

    # ------------------------------------------------------------ the turn
    def request(self, thread: Thread) -> TurnRequest:
        """What the model is sent for the next turn of `thread`: the prompt, the context, the tools."""
        return TurnRequest(
            self.render_prompt(thread), self.render_context(thread), [t.spec() for t in self._steps.values()]
        )

    def variant(self, *, model: Model | None = None, prompt: Path | None = None) -> Agent:
        """This agent with another model or prompt template (an eval's column); nothing else changes."""
        other = copy.copy(self)
        if model is not None:
            other.model = model
        if prompt is not None:
            other.prompt = prompt
            other._template = other._load_template()
        return other

    def step_class(self, name: str) -> type[Tool] | None:
        """The tool (or built-in step) of that name this agent offers its model."""
        return self._steps.get(name)

    async def _turn(self, thread: Thread) -> Thread:
        started = time.perf_counter()
        try:
            turn = self.request(thread)
            reply = await self.model.next_step(turn.system, turn.context, turn.tools)
        except ModelError as exc:
            await self._report_model(error=str(exc))
            return thread.with_events(Error(kind="model_error", message=str(exc)[:2000]))
        finally:
            metrics.MODEL_SECONDS.labels(self.model.name).observe(time.perf_counter() - started)
        if self.model.accepts != self._reported:  # the first turn here, or the server refused a shape
            await self._report_model()
        usage = Usage(
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            model=reply.model or self.model.name,
        )
        metrics.MODEL_TOKENS.labels(self.model.name, "input").inc(usage.input_tokens)
        metrics.MODEL_TOKENS.labels(self.model.name, "output").inc(usage.output_tokens)
        call_id = f"call_{len(thread.events)}"
        try:
            step = self.parse(reply)
        except StepError as exc:
            return thread.with_events(Error(kind=exc.kind, message=str(exc), usage=usage))
        match step:
            case RequestHumanInput():
                return thread.with_events(self._ask(step, usage))
            case DoneForNow():
                return thread.with_events(DoneEvent(text=step.message, usage=usage))
            case Tool() if step.requires_approval:
                return thread.with_events(
                    ApprovalRequested(
                        call_id=call_id, tool=step.name, arguments=step.model_dump(mode="json"), usage=usage
                    )
                )
            case Tool():
                call = ToolCall(call_id=call_id, tool=step.name, arguments=step.model_dump(mode="json"), usage=usage)
                return thread.with_events(call, *(await self._run(thread, step, call_id)))

    async def _report_model(self, error: str | None = None) -> None:
        """Keep the health page's view of this model current (gateway.store.modelhealth)."""
        rt, model = self.runtime, self.model
        try:
            if error is None:
                await modelhealth.report_shape(rt.redis, rt.keys, model.name, model.endpoint, model.accepts)
                self._reported = model.accepts
            else:
                await modelhealth.report_error(rt.redis, rt.keys, model.name, model.endpoint, model.accepts, error)
        except Unavailable as exc:
            # The turn's own save will meet the outage and be retried; the page can wait.
            log.warning("could not report model health", model=model.name, error=str(exc))

    def parse(self, reply: ModelReply) -> Tool:
        """The step a model reply names, validated; a StepError says what the model did wrong."""
        if reply.tool is None:
            raise StepError("no_tool_call", self._no_call_said(reply.text))
        tool = self._steps.get(reply.tool)
        if tool is None:
            raise StepError(
                "unknown_tool", f"there is no tool named {reply.tool!r}; choose one of {', '.join(self._steps)}"
            )
        arguments = reply.arguments or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError as exc:
                raise StepError("invalid_json", f"arguments for {reply.tool} are not valid JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise StepError("invalid_arguments", f"arguments for {reply.tool} must be an object")
        try:
            return tool.model_validate(arguments)
        except ValidationError as exc:
            raise StepError("invalid_arguments", f"arguments for {reply.tool} do not validate: {_short(exc)}") from None

    def _no_call_said(self, text: str | None) -> str:
        """What the model hears next turn when it answered without a call: the exact form to use.

        The form shown is also what the client reads as a call when a server has no native tool
        calling (agents.kit.models.textcalls), so following it works on any server.
        """
        example = json.dumps({"name": "done_for_now", "arguments": {"message": "<your answer>"}})
        return (
            f"your answer was not a tool call. Answer with exactly one call to one of: {', '.join(self._steps)}. "
            f"With no tool-calling support, answer with only a JSON object like {example}. "
            f"You answered: {(text or '')[:500]!r}"
        )

    def _ask(self, step: RequestHumanInput, usage: Usage | None = None) -> AskEvent:
        contact = None
        if step.contact:
            named = self.contacts.get(step.contact)
            try:
                contact = parse_identity(named or step.contact)
            except ValueError:
                contact = None  # an unknown name: ask the requester instead of guessing an address
        deadline = utcnow() + timedelta(minutes=step.deadline_minutes) if step.deadline_minutes else None
        return AskEvent(
            text=step.question,
            choices=step.choices,
            urgency=step.urgency,
            contact=contact,
            deadline=deadline,
            usage=usage,
        )

    def _context(self, thread: Thread, call_id: str) -> ToolContext:
        return ToolContext(
            thread=thread,
            call_id=call_id,
            settings=self.settings,
            http=self.runtime.http,
            agent_settings=self.own_settings,
        )

    async def _run(self, thread: Thread, step: Tool, call_id: str) -> list[Any]:
        ctx = self._context(thread, call_id)
        try:
            result = await step.run(ctx)
        except Exception as exc:
            return [Error(kind="tool_error", message=f"{step.name} failed: {type(exc).__name__}: {exc}"[:2000])]
        return [ToolResult(call_id=call_id, result=_jsonable(result))]

    async def _run_approved(self, thread: Thread, call_id: str) -> Thread:
        """Run exactly the call that was approved — its stored arguments, not new ones."""
        request = next(e for e in reversed(thread.events) if isinstance(e, ApprovalRequested) and e.call_id == call_id)
        tool = self._steps.get(request.tool)
        try:
            if tool is None:  # the agent no longer has the tool the approval names
                raise AttributeError(f"no tool named {request.tool!r}")
            step = tool.model_validate(request.arguments)
        except (AttributeError, ValidationError) as exc:
            return thread.with_events(
                Error(kind="tool_error", message=f"stored call {request.tool} no longer validates: {exc}"[:2000])
            )
        call = ToolCall(call_id=call_id, tool=request.tool, arguments=request.arguments)
        return thread.with_events(call, *(await self._run(thread, step, call_id)))

    async def _prefetch(self, thread: Thread) -> Thread:
        events: list[ContextFetched | Error] = []
        for name, fetch in self.prefetch.items():
            ctx = self._context(thread, f"prefetch_{name}")
            try:
                events.append(ContextFetched(name=name, result=_jsonable(await fetch(thread, ctx))))
            except Exception as exc:
                events.append(Error(kind="prefetch_error", message=f"{name}: {type(exc).__name__}: {exc}"[:2000]))
        return thread.with_events(*events)

    def _escalate(self, thread: Thread, why: str) -> Thread:
        last_error = next((e for e in reversed(thread.events) if isinstance(e, Error)), None)
        detail = f" (last error: {last_error.message[:300]})" if last_error else ""
        step = RequestHumanInput(
            question=f"{why}{detail}. How should I continue?",
            contact="escalation" if "escalation" in self.contacts else None,
        )
        return thread.with_events(self._ask(step))

    def _load_template(self) -> jinja2.Template:
        if self.prompt is None:
            raise ValueError(f"agent {self.name!r} has no prompt template")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(Path(self.prompt).parent)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )
        return env.get_template(Path(self.prompt).name)


def _errors_in_a_row(thread: Thread) -> int:
    count = 0
    for event in reversed(thread.events):
        if event.passive:
            continue
        if not isinstance(event, Error):
            break
        count += 1
    return count


def _turns_since_person(thread: Thread, enough: int) -> int:
    """Model turns (a call made, or a failed attempt) since a person or a deadline last had a say.

    Counting stops at `enough`, so the guard reads at most the last few dozen events of a long
    thread however long it is (benchmarks/NOTES.md, "Thread length").
    """
    turns = 0
    for event in reversed(thread.events):
        if turns >= enough:
            break
        match event.type:
            case "user_message" | "human_response" | "approval_decision" | "timeout":
                break
            case "tool_call" | "error":
                turns += 1
            case "tool_result" | "context" | "request_human_input" | "approval_requested" | "done_for_now":
                pass
            case "delivery" | "note":
                pass
            case _:
                assert_never(event.type)
    return turns


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()[:5])


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        return str(value)
