"""`demo`: a small scripted model, so the quick start runs with no key.

It reads the same rendered context a real model reads and answers with one tool
call from the agent's own script (`Agent.demo`). It says what it is: every
message it writes for a person starts with "[demo model]".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from agents.kit.models.base import ModelError, ModelReply, ToolSpec, Usage

if TYPE_CHECKING:
    from agents.kit.models import DemoScript
    from gateway.settings import Settings

BANNER = "[demo model]"
_SPOKEN = {"request_human_input": "question", "done_for_now": "message"}


class DemoModel:
    name = "demo"
    endpoint = ""  # runs in the worker
    accepts = "the agent's demo script"

    def __init__(self, settings: Settings, script: DemoScript | None = None) -> None:
        self._script = script

    async def next_step(self, system: str, context: str, tools: list[ToolSpec]) -> ModelReply:
        if self._script is None:
            tool, args = (
                "done_for_now",
                {"message": "This agent has no demo script; set FRONTDESK_MODEL to a real model."},
            )
        else:
            try:
                tool, args = self._script(context, [t.name for t in tools])
            except Exception as exc:
                raise ModelError(f"demo script failed: {type(exc).__name__}: {exc}") from exc
        field = _SPOKEN.get(tool)
        if field and not str(args.get(field, "")).startswith(BANNER):
            args = {**args, field: f"{BANNER} {args.get(field, '')}"}
        return ModelReply(
            tool=tool, arguments=json.dumps(args), usage=Usage(len(system + context) // 4, 20), model="demo"
        )

    async def aclose(self) -> None:
        return None
