"""What `frontdesk eval` and `frontdesk eval save` run; the core's CLI finds these by name.

The agents are loaded as `frontdesk check` loads them, with a Redis client that is never
dialled: an eval needs no Redis, no worker and no channel.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import jinja2

from agents.kit.agent import Agent
from agents.kit.evals.cases import CaseError, cut, load_cases, model_turns, save_case
from agents.kit.evals.cassette import Cassette
from agents.kit.evals.run import Column, Suite, dumps, report, run_suite
from agents.kit.models import load_model
from gateway.errors import ConfigError
from gateway.events import Thread
from gateway.runtime import Runtime, running
from gateway.settings import Settings

UNDIALLED = "redis://127.0.0.1:6379/0"


@contextlib.asynccontextmanager
async def _agents(settings: Settings) -> AsyncIterator[Runtime]:
    async with running(settings, redis_url=settings.redis_url or UNDIALLED) as rt:
        yield rt


def _agent(rt: Runtime, name: str) -> Agent:
    agent = rt.agents.get(name)
    if agent is None:
        raise ConfigError(f"no agent named {name!r} (known: {', '.join(rt.agent_names())})")
    if not isinstance(agent, Agent):
        raise ConfigError(f"agent {name!r} is not built on agents.kit.Agent, so it has no eval cases")
    return agent


async def run_evals(
    settings: Settings,
    *,
    agent: str | None,
    models: list[str],
    prompts: list[Path],
    as_json: bool,
    min_rate: float,
    cassette: Path | None,
    record: bool,
    cases_dir: Path | None,
    echo: Callable[[str], None],
) -> int:
    """Run the cases of one agent (or of every agent that has some); 1 when a column falls below `min_rate`."""
    if (prompts or cases_dir) and agent is None:
        raise ConfigError("--prompt and --cases are one agent's: name the agent (frontdesk eval AGENT ...)")
    if record and cassette is None:
        raise ConfigError("--record writes the model's answers to a cassette: give it with --cassette FILE")
    tape = _cassette(cassette, record) if cassette else None
    async with _agents(settings) as rt, contextlib.AsyncExitStack() as owned:
        chosen = [_agent(rt, agent)] if agent else [a for a in rt.agents.values() if isinstance(a, Agent)]
        suites = []
        for one in chosen:
            try:
                stored = load_cases(cases_dir or one.evals_dir)
            except CaseError as exc:
                raise ConfigError(str(exc)) from None
            if not stored:
                continue
            columns = _columns(settings, one, models, prompts, owned)
            if tape is not None:
                columns = [Column(c.label, c.agent.variant(model=tape.wrap(c.agent.model))) for c in columns]
            suites.append(Suite(one.name, _shown(cases_dir or one.evals_dir), stored, columns))
        if not suites:
            where = _shown(cases_dir or chosen[0].evals_dir) if agent else "agents/<name>/evals/"
            raise ConfigError(f"no eval cases in {where} (save one with `frontdesk eval save th_...`)")
        for suite in suites:
            await run_suite(suite)
    if tape is not None:
        tape.save()
    echo(dumps(suites, min_rate) if as_json else report(suites, min_rate))
    return 0 if all(c.rate >= min_rate for s in suites for c in s.columns) else 1


def _cassette(path: Path, record: bool) -> Cassette:
    try:
        return Cassette(path, record=record)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _columns(
    settings: Settings, agent: Agent, models: list[str], prompts: list[Path], owned: contextlib.AsyncExitStack
) -> list[Column]:
    """One column per model and prompt given (each pair when both are); the agent as it is when neither."""
    columns = []
    wanted_models: list[str | None] = [*models] or [None]
    wanted_prompts: list[Path | None] = [*prompts] or [None]
    for spec in wanted_models:
        model = None
        if spec is not None:
            try:
                model = load_model(settings.model_copy(update={"model": spec}), demo=agent.demo)
            except ValueError as exc:
                raise ConfigError(f"--model: {exc}") from None
            owned.push_async_callback(model.aclose)
        for prompt in wanted_prompts:
            try:
                variant = agent.variant(model=model, prompt=prompt)
            except jinja2.TemplateError as exc:
                raise ConfigError(f"--prompt {prompt}: {type(exc).__name__}: {exc}") from None
            label = " · ".join(x for x in (spec, prompt.name if prompt else None) if x)
            columns.append(Column(label or variant.model.name, variant))
    return columns


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


async def save_threads(
    settings: Settings,
    threads: list[Thread],
    *,
    turn: int | None,
    expect: str | None,
    note: str | None,
    cases_dir: Path | None,
    echo: Callable[[str], None],
) -> None:
    """Save each thread's model turns (or only `turn`) as cases beside their agents; one line said per case."""
    if expect is not None and turn is None:
        raise ConfigError("--expect says what one turn should have been: give that turn with --turn N")
    try:
        wanted = json.loads(expect) if expect is not None else None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f'--expect is not JSON ({exc}); write it as {{"tool": "...", "arguments": {{...}}}}'
        ) from None
    if wanted is not None and not isinstance(wanted, dict):
        raise ConfigError('--expect is a JSON object: {"tool": "...", "arguments": {...}} or {"error": "..."}')
    async with _agents(settings) as rt:
        # Every case is made before any is written: a bad --turn or --expect writes nothing.
        try:
            made = [
                (agent, cut(agent, thread, index, expect=wanted, note=note))
                for thread in threads
                for agent in [_agent(rt, thread.agent)]
                for index in ([turn] if turn is not None else model_turns(thread))
            ]
        except CaseError as exc:
            raise ConfigError(str(exc)) from None
    if not made:
        raise ConfigError("no model turns to save (a thread with no step the model took)")
    for agent, case in made:
        path = save_case(agent, case, cases_dir)
        echo(f"saved {case.thread} turn {case.turn} ({case.wanted.tool or case.wanted.error}) to {_shown(path)}")
