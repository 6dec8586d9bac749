"""Tools are structured outputs (factor 4): a pydantic model plus an async function.

The model picks one tool per turn by name and fills in its fields; the fields are
validated by the model class before anything runs. Two steps belong to every
agent: `request_human_input` and `done_for_now` — they pause the loop instead of
running code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.kit.models.base import ToolSpec

if TYPE_CHECKING:
    import httpx

    from gateway.events import Thread
    from gateway.settings import Settings


@dataclass
class ToolContext:
    """What a running tool may use. `idempotency_key` is stable across retries of one call."""

    thread: Thread
    call_id: str
    settings: Settings
    http: httpx.AsyncClient
    # The agent's own settings (its `settings_class`, built by gateway.settings.plugin_settings), if it has one.
    agent_settings: Any = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.thread.id}:{self.call_id}"


_SPECS: dict[type, ToolSpec] = {}


class Tool(BaseModel):
    """Base of every tool. Subclasses add fields and `run`; the docstring is the description."""

    model_config = ConfigDict(extra="forbid")

    name: ClassVar[str] = ""
    requires_approval: ClassVar[bool] = False
    pauses: ClassVar[bool] = False  # request_human_input / done_for_now end the turn without running

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    async def run(self, ctx: ToolContext) -> Any:
        raise NotImplementedError(f"{self.name} has no run()")

    @classmethod
    def spec(cls) -> ToolSpec:
        # Built once per class: pydantic's schema generation cost more than the rest of a
        # step together (benchmarks/, scenario 3). Callers only read it.
        spec = _SPECS.get(cls)
        if spec is None:
            schema = cls.model_json_schema()
            schema.pop("title", None)
            for prop in schema.get("properties", {}).values():
                prop.pop("title", None)
            spec = _SPECS[cls] = ToolSpec(
                name=cls.name, description=(cls.__doc__ or cls.name).strip(), parameters=schema
            )
        return spec

    @classmethod
    def describe(cls) -> dict[str, Any]:
        spec = cls.spec()
        return {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
            "requires_approval": cls.requires_approval,
        }


class RequestHumanInput(Tool):
    """Ask a person a question and wait for the answer. Use `contact` to ask someone other than the requester (a name the instructions list)."""

    name: ClassVar[str] = "request_human_input"
    pauses: ClassVar[bool] = True

    question: str = Field(description="The question, in plain words")
    choices: list[str] = Field(default_factory=list, description="Answers to offer, if the question has a few")
    urgency: Literal["low", "normal", "high"] = "normal"
    contact: str | None = Field(default=None, description="Who to ask, when not the person who wrote")
    deadline_minutes: int | None = Field(default=None, ge=1, description="Give up waiting after this long")


class DoneForNow(Tool):
    """Finish for now with a final message to the person who wrote."""

    name: ClassVar[str] = "done_for_now"
    pauses: ClassVar[bool] = True

    message: str = Field(description="The final answer or report")


BUILTIN_TOOLS: tuple[type[Tool], ...] = (RequestHumanInput, DoneForNow)
