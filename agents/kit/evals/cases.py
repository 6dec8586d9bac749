"""Eval cases: a stored thread cut at one model turn.

A model turn is an event the model's answer made, which carries its `usage`: a `tool_call`
(not the re-run of an approved call, which has none), `approval_requested`,
`request_human_input` (not an escalation the loop wrote), `done_for_now`, and an `error` of
the model's making (no tool call, an unknown tool, bad JSON, arguments that do not validate).
The events before it are the case's input; the step it recorded is the expected answer,
unless `expect` says what the right step was.

Cases are JSONL files in the agent's `evals/` directory, one case per line, so a change to
one shows as one changed line in a diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.kit.tools import RequestHumanInput, Tool
from gateway.config import parse_identity
from gateway.events import Contact, Event, Thread

if TYPE_CHECKING:
    from agents.kit.agent import Agent

SAVED = "saved.jsonl"  # where `frontdesk eval save` and the dashboard write
MODEL_TURNS = frozenset({"tool_call", "approval_requested", "request_human_input", "done_for_now", "error"})


class CaseError(ValueError):
    """A case that cannot be made or read: the message says which and why."""


class Step(BaseModel):
    """One step a model took: a tool with its arguments, or the kind of a mistake (`error`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None  # no_tool_call, unknown_tool, invalid_json, invalid_arguments

    @classmethod
    def of(cls, tool: Tool) -> Step:
        return cls(tool=tool.name, arguments=tool.model_dump(mode="json"))

    def lines(self) -> list[str]:
        """The step as a person compares it: the tool, then one line per argument."""
        if self.error is not None:
            return [f"error: {self.error}"]
        return [
            f"tool: {self.tool}",
            *(f"  {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.arguments.items()),
        ]

    def public(self) -> dict[str, Any]:
        return {"error": self.error} if self.error is not None else {"tool": self.tool, "arguments": self.arguments}


class Case(BaseModel):
    """One turn to re-run: the events before it, and the step expected of the model."""

    model_config = ConfigDict(extra="forbid")

    agent: str
    thread: str  # the source thread's id
    turn: int  # the index of the model turn in the source thread; `events` are the ones before it
    note: str | None = None
    expected: Step  # what the model did
    expect: Step | None = None  # what it should have done, when that was not it
    origin: Contact
    events: list[Event]

    @property
    def wanted(self) -> Step:
        return self.expect or self.expected

    def as_thread(self) -> Thread:
        return Thread(id=self.thread, agent=self.agent, origin=self.origin, events=self.events)

    def line(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), ensure_ascii=False)


@dataclass(frozen=True)
class Stored:
    """A case read from a file, with where it was read (`saved.jsonl:3`)."""

    path: Path
    line: int
    case: Case

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def model_turns(thread: Thread) -> list[int]:
    """The indices of the thread's model turns (the events a model answer made)."""
    return [i for i, e in enumerate(thread.events) if e.type in MODEL_TURNS and getattr(e, "usage", None) is not None]


def recorded_step(agent: Agent, event: Event) -> Step:
    """The step the model took, read back from the event its answer made."""
    match event.type:
        case "tool_call" | "approval_requested":
            return Step(tool=event.tool, arguments=event.arguments)
        case "done_for_now":
            return Step(tool="done_for_now", arguments={"message": event.text})
        case "request_human_input":
            minutes = round((event.deadline - event.at).total_seconds() / 60) if event.deadline else None
            ask = RequestHumanInput(
                question=event.text,
                choices=event.choices,
                urgency=event.urgency,
                contact=_contact_name(agent, event.contact),
                deadline_minutes=minutes,
            )
            return Step.of(ask)
        case "error":
            return Step(error=event.kind)
    raise CaseError(f"a {event.type} event is not a model turn")


def _contact_name(agent: Agent, contact: Contact | None) -> str | None:
    """The name the model used for a contact (the agent's contacts map it to an address)."""
    if contact is None:
        return None
    for name, identity in agent.contacts.items():
        try:
            if parse_identity(identity).identity == contact.identity:
                return name
        except ValueError:
            continue
    return contact.identity


def expected_step(agent: Agent, given: dict[str, Any]) -> Step:
    """`{"tool": ..., "arguments": {...}}` or `{"error": kind}`, checked against the agent's tools.

    Arguments are validated by the tool and written with its defaults, as a re-run's step is.
    """
    try:
        step = Step.model_validate(given)
    except ValidationError as exc:
        raise CaseError(
            f'an expected step is {{"tool": NAME, "arguments": {{...}}}} or {{"error": KIND}}: {exc}'
        ) from None
    if (step.tool is None) == (step.error is None):
        raise CaseError('an expected step names either a "tool" or an "error", not both or neither')
    if step.error is not None:
        return step
    tool = agent.step_class(step.tool or "")
    if tool is None:
        raise CaseError(f"{agent.name} has no tool {step.tool!r}; it has {', '.join(t['name'] for t in agent.tools())}")
    try:
        return Step.of(tool.model_validate(step.arguments))
    except ValidationError as exc:
        raise CaseError(f"arguments for {step.tool} do not validate: {exc.errors()[0]['msg']}") from None


def cut(
    agent: Agent, thread: Thread, turn: int, *, expect: dict[str, Any] | None = None, note: str | None = None
) -> Case:
    """`thread` cut at its model turn `turn`: the events before it, and the step recorded there."""
    if thread.agent != agent.name:
        raise CaseError(f"thread {thread.id} belongs to {thread.agent!r}, not {agent.name!r}")
    turns = model_turns(thread)
    if turn not in turns:
        where = ", ".join(map(str, turns)) or "none"
        raise CaseError(f"event {turn} of {thread.id} is not a model turn (its model turns: {where})")
    return Case(
        agent=agent.name,
        thread=thread.id,
        turn=turn,
        note=note or None,
        expected=recorded_step(agent, thread.events[turn]),
        expect=expected_step(agent, expect) if expect is not None else None,
        origin=thread.origin,
        events=thread.events[:turn],
    )


def save_case(agent: Agent, case: Case, directory: Path | None = None) -> Path:
    """Write `case` to saved.jsonl in `directory` (default: the agent's evals/).

    A case of the same thread and turn is replaced, not doubled: saving a thread again updates its cases.
    """
    path = (directory or agent.evals_dir) / SAVED
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.strip() and _key(line) != (case.thread, case.turn)]
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text("".join(f"{line}\n" for line in [*kept, case.line()]))
    part.replace(path)  # whole or not at all: a reader never meets half a file
    return path


def _key(line: str) -> tuple[str, int] | None:
    try:
        data = json.loads(line)
        return data["thread"], data["turn"]
    except (ValueError, KeyError, TypeError):
        return None


def load_cases(directory: Path) -> list[Stored]:
    """Every case in `directory/*.jsonl`, in file and line order; a bad line is a CaseError naming it."""
    found: list[Stored] = []
    for path in sorted(directory.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                found.append(Stored(path, number, Case.model_validate_json(line)))
            except ValidationError as exc:
                first = exc.errors()[0]
                at = ".".join(map(str, first["loc"]))
                raise CaseError(f"{path}:{number}: not an eval case: {at}: {first['msg']}") from None
    return found
