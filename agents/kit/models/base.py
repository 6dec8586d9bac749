"""What every model client speaks: tools in, exactly one tool call out.

A client translates one vendor's wire format to and from these few types; nothing
outside `agents/kit/models/` imports a concrete vendor SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import ModelError  # noqa: F401 - part of this module's interface: clients raise it


@dataclass(frozen=True)
class ToolSpec:
    """One step the model may choose: a named function with a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class ModelReply:
    """The model's answer to one turn.

    `tool` is None when the model answered with no tool call; `arguments` is the
    raw JSON string the model produced (or an already-decoded dict): parsing and
    validation belong to the loop, so that a malformed answer becomes an `error`
    event the model sees next turn.
    """

    tool: str | None
    arguments: str | dict[str, Any] | None
    usage: Usage = field(default_factory=Usage)
    text: str | None = None
    model: str = ""


class Model(Protocol):
    """A chat model with native tool calling, forced to exactly one tool call a turn."""

    name: str
    endpoint: str  # where it is served ("" for one in the process), for the health page

    @property
    def accepts(self) -> str:
        """The request shape its server settled on, in words (the health page, `frontdesk check --model`)."""
        ...

    async def next_step(self, system: str, context: str, tools: list[ToolSpec]) -> ModelReply: ...

    async def aclose(self) -> None: ...
