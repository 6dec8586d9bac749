"""Re-run each case's turn and compare the step the model takes now with the one expected.

The turn is built by `Agent.request` — the loop's own prompt, context renderer and tool specs —
and the reply is validated by `Agent.parse`, so an eval sees exactly what a live turn sees.
Nothing runs: no tool, no pre-fetch, no Redis.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.kit.evals.cases import Step, Stored
from agents.kit.models.base import ModelError
from gateway.errors import StepError

if TYPE_CHECKING:
    from agents.kit.agent import Agent


@dataclass(frozen=True)
class Result:
    """What one column made of one case."""

    passed: bool
    step: Step | None  # None when the model could not be asked (a model error)
    context: str  # the context window the model read
    detail: str = ""  # what went wrong: a model error, or the loop's message for a bad step


@dataclass
class Column:
    """One way of running the cases: the agent with a model and a prompt."""

    label: str
    agent: Agent
    results: list[Result] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def rate(self) -> float:
        return self.passed / len(self.results) if self.results else 1.0


@dataclass
class Suite:
    """One agent's cases and each column's results, in case order."""

    agent: str
    where: str
    cases: list[Stored]
    columns: list[Column]


async def run_case(agent: Agent, stored: Stored) -> Result:
    case = stored.case
    turn = agent.request(case.as_thread())
    try:
        reply = await agent.model.next_step(turn.system, turn.context, turn.tools)
    except ModelError as exc:
        return Result(False, None, turn.context, f"model error: {exc}")
    try:
        step, detail = Step.of(agent.parse(reply)), ""
    except StepError as exc:
        step, detail = Step(error=exc.kind), str(exc)
    return Result(agent.same_step(case.wanted, step), step, turn.context, detail)


async def run_suite(suite: Suite) -> Suite:
    for column in suite.columns:
        column.results = [await run_case(column.agent, stored) for stored in suite.cases]
    return suite


# ---------------------------------------------------------------- the report


def report(suites: list[Suite], min_rate: float) -> str:
    """Per agent: a case-by-column table, the pass rates, then each failure with its context and diff."""
    out: list[str] = []
    for suite in suites:
        count = len(suite.cases)
        out.append(f"{suite.agent}: {count} case{'' if count == 1 else 's'} in {suite.where}")
        names = [f"{s.where} @{s.case.turn}" for s in suite.cases] + ["pass rate"]
        width = max(len(n) for n in names)
        widths = [max(len(c.label), 10) for c in suite.columns]
        out.append(
            "  " + " " * width + "  " + "  ".join(c.label.ljust(w) for c, w in zip(suite.columns, widths, strict=True))
        )
        for i, name in enumerate(names[:-1]):
            cells = ["pass" if c.results[i].passed else "FAIL" for c in suite.columns]
            out.append(f"  {name.ljust(width)}  " + "  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)))
        rates = [f"{c.passed}/{len(c.results)} {c.rate:.0%}" for c in suite.columns]
        out.append(f"  {names[-1].ljust(width)}  " + "  ".join(v.ljust(w) for v, w in zip(rates, widths, strict=True)))
        for column in suite.columns:
            for stored, result in zip(suite.cases, column.results, strict=True):
                if not result.passed:
                    out.append("")
                    out.extend(_failure(suite.agent, column.label, stored, result))
        out.append("")
    failing = [f"{s.agent} [{c.label}] {c.rate:.0%}" for s in suites for c in s.columns if c.rate < min_rate]
    if failing:
        out.append(f"FAILED: below the pass rate of {min_rate:.0%}: {', '.join(failing)}")
    else:
        out.append(f"passed: every column at or above {min_rate:.0%}")
    return "\n".join(line.rstrip() for line in out)


def _failure(agent: str, label: str, stored: Stored, result: Result) -> list[str]:
    case = stored.case
    lines = [f"FAIL {agent} {stored.where} [{label}]: thread {case.thread}, turn {case.turn}"]
    if case.note:
        lines.append(f"  note: {case.note}")
    if result.detail:
        lines.append(f"  {result.detail}")
    lines.append("  context the model saw:")
    lines.extend(f"    | {line}" for line in result.context.splitlines())
    got = result.step.lines() if result.step else ["(no step)"]
    lines.extend(f"  {row}" for row in side_by_side(case.wanted.lines(), got))
    return lines


def side_by_side(expected: list[str], got: list[str]) -> list[str]:
    """Two steps in two columns, aligned where they agree; `*` marks each row that differs."""
    rows: list[tuple[str, str, str]] = []
    matcher = difflib.SequenceMatcher(a=expected, b=got, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            rows.extend((" ", line, line) for line in expected[i1:i2])
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            left = expected[i1 + k] if i1 + k < i2 else ""
            right = got[j1 + k] if j1 + k < j2 else ""
            rows.append(("*", left, right))
    width = max([len("expected"), *(len(r[1]) for r in rows)])
    return [f"  {'expected'.ljust(width)} | got"] + [
        f"{mark} {left.ljust(width)} | {right}" for mark, left, right in rows
    ]


def as_json(suites: list[Suite], min_rate: float) -> dict[str, Any]:
    agents = []
    for suite in suites:
        cases = []
        for i, stored in enumerate(suite.cases):
            results = {}
            for column in suite.columns:
                r = column.results[i]
                results[column.label] = {
                    "passed": r.passed,
                    "step": r.step.public() if r.step else None,
                    "detail": r.detail or None,
                    "context": r.context,
                }
            cases.append(
                {
                    "case": stored.where,
                    "thread": stored.case.thread,
                    "turn": stored.case.turn,
                    "note": stored.case.note,
                    "expected": stored.case.wanted.public(),
                    "results": results,
                }
            )
        rates = {c.label: {"passed": c.passed, "cases": len(c.results), "rate": c.rate} for c in suite.columns}
        agents.append({"agent": suite.agent, "where": suite.where, "columns": rates, "cases": cases})
    ok = all(c.rate >= min_rate for s in suites for c in s.columns)
    return {"passed": ok, "min_pass_rate": min_rate, "agents": agents}


def dumps(suites: list[Suite], min_rate: float) -> str:
    return json.dumps(as_json(suites, min_rate), ensure_ascii=False, indent=1)
