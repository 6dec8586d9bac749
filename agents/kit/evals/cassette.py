"""Recorded model answers, so an eval suite runs without a model server.

A cassette is a JSON file mapping a hash of the request — the model's name, the system
prompt, the context and the tool specs — to the reply the model gave. `--record` asks the
model and writes its answers; otherwise a request with no recorded answer is a model error
for that case, which names the file. A changed prompt is a changed request: it replays
nothing until it is recorded again, so a cassette can never pass a prompt it did not see.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from agents.kit.models.base import Model, ModelError, ModelReply, ToolSpec, Usage


def request_key(model: str, system: str, context: str, tools: list[ToolSpec]) -> str:
    body = {"model": model, "system": system, "context": context, "tools": [dataclasses.asdict(t) for t in tools]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Cassette:
    """The answers in one file; `record` adds the model's own, `save` writes them back."""

    def __init__(self, path: Path, *, record: bool = False) -> None:
        self.path = path
        self.record = record
        self.answers: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                self.answers = json.loads(path.read_text())["answers"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path} is not a cassette ({{'answers': {{...}}}}): {exc}") from None
        elif not record:
            raise ValueError(f"no cassette at {path}; record one with --record")

    def wrap(self, model: Model) -> Model:
        return _Replaying(self, model)

    def save(self) -> None:
        if self.record:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            body = json.dumps({"answers": self.answers}, indent=1, sort_keys=True, ensure_ascii=False)
            self.path.write_text(body + "\n")


class _Replaying:
    """A Model that answers from the cassette, asking the real one only when recording."""

    def __init__(self, cassette: Cassette, model: Model) -> None:
        self._cassette, self._model = cassette, model
        self.name, self.endpoint = model.name, model.endpoint

    @property
    def accepts(self) -> str:
        return self._model.accepts

    async def next_step(self, system: str, context: str, tools: list[ToolSpec]) -> ModelReply:
        key = request_key(self.name, system, context, tools)
        if self._cassette.record:
            reply = await self._model.next_step(system, context, tools)
            self._cassette.answers[key] = {
                "model": self.name,
                "tool": reply.tool,
                "arguments": reply.arguments,
                "text": reply.text,
                "usage": [reply.usage.input_tokens, reply.usage.output_tokens],
                "served_by": reply.model,
            }
            return reply
        answer = self._cassette.answers.get(key)
        if answer is None:
            raise ModelError(
                f"{self._cassette.path} has no answer of {self.name} to this request"
                " (the prompt, context or tools changed?); run with --record to ask the model"
            )
        return ModelReply(
            tool=answer["tool"],
            arguments=answer["arguments"],
            text=answer["text"],
            usage=Usage(*answer["usage"]),
            model=answer["served_by"],
        )

    async def aclose(self) -> None:
        await self._model.aclose()
