"""For agent authors' pytest tests: build a thread from events, assert the step the model takes next.

    thread = thread_of(agent, "what is 6 times 7?")
    await assert_next_step(agent, thread, "multiply", a=6, b=7)

The turn is the one `frontdesk eval` re-runs (agents.kit.evals.run): the agent's own prompt,
context and tools, its model's answer validated by the loop; no tool runs.
"""

from __future__ import annotations

from typing import Any

from agents.kit.agent import Agent
from agents.kit.evals.cases import Case, Step, Stored
from agents.kit.evals.run import run_case, side_by_side
from gateway.config import parse_identity
from gateway.events import Event, Thread, UserMessage


def thread_of(
    agent: Agent | str, *events: Event | str, origin: str = "api:tester", thread_id: str = "th_test"
) -> Thread:
    """A running thread of `agent`; a plain string is a `user_message` from `origin`."""
    contact = parse_identity(origin)
    built = [
        UserMessage(text=e, sender=contact.address, channel=contact.channel) if isinstance(e, str) else e
        for e in events
    ]
    name = agent if isinstance(agent, str) else agent.name
    return Thread(id=thread_id, agent=name, origin=contact, events=built)


async def next_step(agent: Agent, thread: Thread) -> Step:
    """The step the agent's model takes next on `thread` (an `error` step when its answer is no valid call)."""
    result = await run_case(agent, _case(agent, thread, Step(tool="done_for_now")))
    if result.step is None:
        raise AssertionError(result.detail)
    return result.step


async def assert_next_step(agent: Agent, thread: Thread, tool: str, **arguments: Any) -> Step:
    """Assert the model's next step calls `tool`, with these arguments equal (others are not checked)."""
    step = await next_step(agent, thread)
    wanted = {**step.arguments, **arguments} if step.tool == tool else arguments
    if step.tool != tool or step.arguments != wanted:
        expected = Step(tool=tool, arguments=wanted)
        diff = "\n".join(side_by_side(expected.lines(), step.lines()))
        raise AssertionError(f"{agent.name} took another step:\n{diff}\ncontext:\n{agent.render_context(thread)}")
    return step


def _case(agent: Agent, thread: Thread, expected: Step) -> Stored:
    case = Case(
        agent=agent.name,
        thread=thread.id,
        turn=len(thread.events),
        expected=expected,
        origin=thread.origin,
        events=thread.events,
    )
    return Stored(agent.evals_dir / "(inline)", 0, case)
