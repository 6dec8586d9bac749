"""`frontdesk check --model`: one tiny request, and what the model's server made of it.

The request is the one a turn makes (the same client, the same fallback over request shapes),
cut down to one tool, so what it reports is what the agents will meet: the shape the server
settled on, whether the model answered with a call, or the error it gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agents.kit.models import load_model
from agents.kit.models.base import ModelError
from agents.kit.tools import DoneForNow

if TYPE_CHECKING:
    from gateway.settings import Settings

# The agents' own final step, so the probe offers exactly what a turn offers.
_ANSWER = DoneForNow.spec()
_SYSTEM = "You are a health check. Call done_for_now with the message 'ok'."


@dataclass(frozen=True)
class ModelCheck:
    model: str
    endpoint: str
    accepts: str  # the shape the server settled on
    answer: str | None = None  # what the model did with the request
    error: str | None = None  # the server (or the connection) failed: the agents will too

    def lines(self) -> list[str]:
        where = f" at {self.endpoint}" if self.endpoint else ""
        if self.error is not None:
            return [f"{self.model}{where}: FAILED: {self.error}"]
        return [f"{self.model}{where}: answered", f"  accepts  {self.accepts}", f"  answer   {self.answer}"]


async def check_model(settings: Settings, spec: str) -> ModelCheck:
    """Send the model `spec` names one request, through the client its agents use."""
    model = load_model(settings.model_copy(update={"model": spec}))
    try:
        # A 5xx that only the stricter shapes meet is taken for a refusal once it recurs
        # (agents.kit.models.openai): a second request tells a picky server from a broken one.
        for attempt in (1, 2):
            try:
                reply = await model.next_step(_SYSTEM, "Say ok.", [_ANSWER])
                break
            except ModelError as exc:
                if attempt == 2 or exc.status is None or exc.status < 500:
                    return ModelCheck(model.name, model.endpoint, model.accepts, error=str(exc))
    finally:
        await model.aclose()
    if reply.tool is None:
        answer = f"text, no tool call ({(reply.text or '')[:200]!r}): the agents will get no_tool_call errors"
    else:
        answer = f"a call to {reply.tool} with {reply.arguments!r}"[:300]
    return ModelCheck(model.name, model.endpoint, model.accepts, answer=answer)
