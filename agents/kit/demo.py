"""Helpers for agents' demo scripts: read the rendered context, answer one step."""

from __future__ import annotations

import re
from typing import Any

from agents.kit.context import Block

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(text)]


def fmt(value: float | str) -> str:
    """6.0 -> "6", 0.5 -> "0.5"."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def said(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.tag in ("user_message", "human_response")]


def ask(question: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return "request_human_input", {"question": question, **extra}


def done(message: str) -> tuple[str, dict[str, Any]]:
    return "done_for_now", {"message": message}
