"""calculator: arithmetic with one gated step — every division needs a person's approval.

The quick start's agent: with the `demo` model it computes, asks a question,
asks for approval, and finishes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from agents.kit import Agent, Tool, ToolContext, parse_blocks
from agents.kit.demo import ask, done, fmt, numbers, said
from agents.kit.evals.cases import Step


class Add(Tool):
    """Add b to a."""

    a: float
    b: float

    async def run(self, ctx: ToolContext) -> float:
        return self.a + self.b


class Subtract(Tool):
    """Subtract b from a."""

    a: float
    b: float

    async def run(self, ctx: ToolContext) -> float:
        return self.a - self.b


class Multiply(Tool):
    """Multiply a by b."""

    a: float
    b: float

    async def run(self, ctx: ToolContext) -> float:
        return self.a * self.b


class Divide(Tool):
    """Divide a by b. A person approves every division before it runs."""

    requires_approval: ClassVar[bool] = True
    a: float
    b: float

    async def run(self, ctx: ToolContext) -> float:
        if self.b == 0:
            raise ZeroDivisionError("cannot divide by zero")
        return self.a / self.b


_OPS = {
    "add": ("plus", "add", "+", "sum"),
    "subtract": ("minus", "subtract", "less"),
    "multiply": ("times", "multiply", "*", "×"),
}


class Calculator(Agent):
    name = "calculator"
    description = "Arithmetic; every division is approved by a person first."
    toolbox = (Add, Subtract, Multiply, Divide)
    prompt = Path(__file__).with_name("prompt.md.j2")

    def same_step(self, expected: Step, actual: Step) -> bool:
        """An eval passes with numbers equal to nine digits: 0.1 + 0.2 is not 0.30000000000000004 to a person."""
        if (expected.tool, expected.error, expected.arguments.keys()) != (
            actual.tool,
            actual.error,
            actual.arguments.keys(),
        ):
            return False
        return all(_same(expected.arguments[k], actual.arguments[k]) for k in expected.arguments)

    def demo(self, context: str, tools: list[str]) -> tuple[str, dict[str, Any]]:
        blocks = parse_blocks(context)
        last, results = blocks[-1], [b for b in blocks if b.tag == "tool_result"]
        if last.tag == "approval_decision" and last.attrs.get("approved") == "false":
            return done(
                f"OK, I won't divide. The last result was {fmt(results[-1].body) if results else 'nothing yet'}."
            )
        if last.tag == "error":
            return done(f"I could not finish: {last.body}")
        first = said(blocks)[0].body
        if not results:
            values = numbers(first)
            if len(values) < 2:
                return ask("Which two numbers should I work with?")
            words = first.lower()
            op = next((name for name, keys in _OPS.items() if any(k in words for k in keys)), "multiply")
            return op, {"a": values[0], "b": values[1]}
        value = fmt(results[-1].body)
        if len(results) == 1:
            if last.tag == "human_response":
                divisor = numbers(last.body)
                if divisor:
                    return "divide", {"a": float(value), "b": divisor[0]}
                return ask(f"Please give me a number to divide {value} by.")
            return ask(f"I got {value}. What should I divide {value} by?")
        return done(f"The answer is {value}.")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return bool(a == b)
