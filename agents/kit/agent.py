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

import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from pydantic import ValidationError

from agents.kit.context import render_context
from agents.kit.models import load_model
from agents.kit.models.base import Model, ModelError, ModelReply
from agents.kit.tools import BUILTIN_TOOLS, DoneForNow, RequestHumanInput, Tool, ToolContext
from gateway import metrics
from gateway.config import parse_identity
from gateway.events import (
    ApprovalRequested,
    ContextFetched,
    Error,
    Thread,
    ToolCall,
    ToolResult,
    Usage,
    utcnow,
)
from gateway.events import DoneForNow as DoneEvent
from gateway.events import RequestHumanInput as AskEvent

if TYPE_CHECKING:
    from gateway.runtime import Runtime

MAX_ERRORS_IN_A_ROW = 3
Prefetch = Callable[[Thread, ToolContext], Awaitable[Any]]
_QUIET = {"delivery", "note"}  # bookkeeping: never part of "what happened last"


class Agent:
    """A small, focused agent: its prompt file, its tools, its model, its loop.

    Subclass it (or instantiate it) with a `name`, a `description`, the `tools`
    it may call, the `prompt` template beside its code, and optional `prefetch`
    functions whose results land in the context before the first model call.
    """

    name: str = ""
    description: str = ""
    toolbox: tuple[type[Tool], ...] = ()
    prompt: Path | None = None
    prefetch: dict[str, Prefetch] = {}

    def __init__(self, runtime: Runtime, *, model: Model | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        cfg = runtime.config.agent(self.name)
        self.contacts = dict(cfg.contacts)
        self.model = model or load_model(
            self.settings.model_copy(update={"model": cfg.model}) if cfg.model else self.settings, demo=self.demo
        )
        self._steps = {tool.name: tool for tool in (*self.toolbox, *BUILTIN_TOOLS)}
        self._template = self._load_template()

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

    # ------------------------------------------------------------ protocol
    def tools(self) -> list[dict[str, Any]]:
        return [tool.describe() for tool in self._steps.values()]

    async def aclose(self) -> None:
        await self.model.aclose()

    async def step(self, thread: Thread, event: Any | None) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        if thread.status != "running":
            return thread
        last = _last(thread)
        if last is not None and last.type == "approval_decision" and last.approved:
            return await self._run_approved(thread, last.call_id)
        if self.prefetch and not any(e.type == "context" for e in thread.events):
            thread = await self._prefetch(thread)
        if _errors_in_a_row(thread) >= MAX_ERRORS_IN_A_ROW:
            return self._escalate(thread, "I keep running into errors")
        if _turns_since_person(thread) >= self.settings.max_steps:
            return self._escalate(thread, f"I have taken {self.settings.max_steps} steps without finishing")
        return await self._turn(thread)

    # ------------------------------------------------------------ the turn
    async def _turn(self, thread: Thread) -> Thread:
        started = time.perf_counter()
        try:
            reply = await self.model.next_step(
                self.render_prompt(thread), self.render_context(thread), [t.spec() for t in self._steps.values()]
            )
        except ModelError as exc:
            return thread.with_events(Error(kind="model_error", message=str(exc)[:2000]))
        finally:
            metrics.MODEL_SECONDS.labels(self.model.name).observe(time.perf_counter() - started)
        usage = Usage(
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            model=reply.model or self.model.name,
        )
        metrics.MODEL_TOKENS.labels(self.model.name, "input").inc(usage.input_tokens)
        metrics.MODEL_TOKENS.labels(self.model.name, "output").inc(usage.output_tokens)
        call_id = f"call_{len(thread.events)}"
        try:
            step = self._parse(reply)
        except _BadStep as exc:
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

    def _parse(self, reply: ModelReply) -> Tool:
        if reply.tool is None:
            raise _BadStep("no_tool_call", f"answer with exactly one tool call; got text: {(reply.text or '')[:500]!r}")
        tool = self._steps.get(reply.tool)
        if tool is None:
            raise _BadStep(
                "unknown_tool", f"there is no tool named {reply.tool!r}; choose one of {', '.join(self._steps)}"
            )
        arguments = reply.arguments or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError as exc:
                raise _BadStep("invalid_json", f"arguments for {reply.tool} are not valid JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise _BadStep("invalid_arguments", f"arguments for {reply.tool} must be an object")
        try:
            return tool.model_validate(arguments)
        except ValidationError as exc:
            raise _BadStep("invalid_arguments", f"arguments for {reply.tool} do not validate: {_short(exc)}") from None

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

    async def _run(self, thread: Thread, step: Tool, call_id: str) -> list[Any]:
        ctx = ToolContext(thread=thread, call_id=call_id, settings=self.settings, http=self.runtime.http)
        try:
            result = await step.run(ctx)
        except Exception as exc:
            return [Error(kind="tool_error", message=f"{step.name} failed: {type(exc).__name__}: {exc}"[:2000])]
        return [ToolResult(call_id=call_id, result=_jsonable(result))]

    async def _run_approved(self, thread: Thread, call_id: str) -> Thread:
        """Run exactly the call that was approved — its stored arguments, not new ones."""
        request = next(e for e in reversed(thread.events) if e.type == "approval_requested" and e.call_id == call_id)
        tool = self._steps.get(request.tool)
        try:
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
            ctx = ToolContext(thread=thread, call_id=f"prefetch_{name}", settings=self.settings, http=self.runtime.http)
            try:
                events.append(ContextFetched(name=name, result=_jsonable(await fetch(thread, ctx))))
            except Exception as exc:
                events.append(Error(kind="prefetch_error", message=f"{name}: {type(exc).__name__}: {exc}"[:2000]))
        return thread.with_events(*events)

    def _escalate(self, thread: Thread, why: str) -> Thread:
        last_error = next((e for e in reversed(thread.events) if e.type == "error"), None)
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


class _BadStep(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _last(thread: Thread) -> Any | None:
    return next((e for e in reversed(thread.events) if e.type not in _QUIET), None)


def _errors_in_a_row(thread: Thread) -> int:
    count = 0
    for event in reversed(thread.events):
        if event.type in _QUIET:
            continue
        if event.type != "error":
            break
        count += 1
    return count


def _turns_since_person(thread: Thread) -> int:
    turns = 0
    for event in reversed(thread.events):
        if event.type in ("user_message", "human_response", "approval_decision", "timeout"):
            break
        if event.type in ("tool_call", "error"):
            turns += 1
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
