"""Tool calls that arrive as text: what small and local models answer instead of a native call.

Servers without native tool calling (or models too small to use it) put the call in the
message's content. The forms met in practice: a bare JSON object, a fenced ```json block,
Hermes/Qwen's `<tool_call>{...}</tool_call>`, and `functions.NAME:` followed by the arguments
(OpenAI's own prompt format, echoed by models trained on it). A form is read as a call only when
it is unambiguous: exactly one candidate, naming a tool that was offered. Anything else stays
text, and the loop's `error` event tells the model what to answer next turn (factor 9).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_PREFIXED = re.compile(r"^\s*functions\.([A-Za-z0-9_-]+)\s*:?\s*(.*)$", re.DOTALL)
# The keys models use for the two halves of a call.
_NAME_KEYS = ("name", "tool", "function", "tool_name")
_ARGUMENT_KEYS = ("arguments", "parameters", "args", "input")


def parse_text_call(text: str | None, tools: Collection[str]) -> tuple[str, dict[str, Any]] | None:
    """(tool, arguments) when `text` holds exactly one call to one of `tools`, else None."""
    if not text or not text.strip():
        return None
    prefixed = _PREFIXED.match(text)
    if prefixed:
        name, rest = prefixed.groups()
        arguments = _object(rest.strip()) if rest.strip() else {}
        return (name, arguments) if name in tools and arguments is not None else None
    candidates = _TAGGED.findall(text) or _FENCED.findall(text) or [text]
    # Two calls in one answer are ambiguous: the loop takes one step a turn, and guessing which is worse.
    return _call(_object(candidates[0].strip()), tools) if len(candidates) == 1 else None


def _object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _call(value: dict[str, Any] | None, tools: Collection[str]) -> tuple[str, dict[str, Any]] | None:
    """A JSON object read as a call: {"name": …, "arguments": {…}} and its spellings."""
    if value is None:
        return None
    if isinstance(value.get("function"), dict):  # {"function": {"name", "arguments"}}, as in a native call
        value = value["function"]
    name = next((value[k] for k in _NAME_KEYS if isinstance(value.get(k), str)), None)
    if name is None or name not in tools:
        return None
    arguments: Any = next((value[k] for k in _ARGUMENT_KEYS if k in value), {})
    if isinstance(arguments, str):  # arguments as a JSON string, as the wire format sends them
        arguments = _object(arguments)
    if not isinstance(arguments, dict):
        return None
    # Nothing beside the name and the arguments: otherwise it may be an answer that mentions a tool.
    if set(value) - {*_NAME_KEYS, *_ARGUMENT_KEYS, "type", "id"}:
        return None
    return name, arguments


def step_schema(tools: Collection[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A JSON schema of the step union, for servers that constrain output (`response_format`)."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": parameters},
                "required": ["name", "arguments"],
            }
            for name, parameters in tools
        ]
    }
