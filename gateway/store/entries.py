"""Stream entries: what travels on the inbound stream and waits in a thread's inbox.

An entry names its kind, its thread and a JSON payload. In a thread's inbox (a
sorted set, all scores 0, so ordered by member) the member is the stream id,
zero-padded so that lexical order is arrival order, then the entry's fields
joined by `|` with the JSON last — a fixed text form, because the save script
(Lua) builds the same member for the `continue` entries it adds and the two must
be byte-identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["inbound", "resume", "continue", "delivery", "timeout"]


@dataclass(frozen=True)
class Entry:
    kind: str
    thread_id: str
    data: dict[str, Any] | None = None
    agent: str = ""  # the routed agent, used when the entry starts a thread
    stream_id: str = ""

    def fields(self) -> dict[str, str]:
        out = {"k": self.kind, "t": self.thread_id}
        if self.data is not None:
            out["d"] = json.dumps(self.data, separators=(",", ":"))
        if self.agent:
            out["a"] = self.agent
        return out

    @classmethod
    def from_fields(cls, stream_id: str, fields: dict[str, str]) -> Entry:
        raw = fields.get("d")
        return cls(
            kind=fields.get("k", ""),
            thread_id=fields.get("t", ""),
            data=json.loads(raw) if raw else None,
            agent=fields.get("a", ""),
            stream_id=stream_id,
        )

    def inbox_member(self) -> str:
        data = self.fields().get("d", "")
        return f"{pad_id(self.stream_id)}|{self.kind}|{self.thread_id}|{self.agent}|{data}"

    @classmethod
    def from_inbox(cls, member: str) -> Entry:
        padded, kind, thread_id, agent, data = member.split("|", 4)
        fields = {"k": kind, "t": thread_id, "a": agent, "d": data}
        return cls.from_fields(unpad_id(padded), fields)


def stream_order(stream_id: str) -> tuple[int, int]:
    """A sort key that orders Redis stream ids as Redis does: by milliseconds, then sequence."""
    # Not as strings: "9-0" sorts after "10-0", and a bare "5" means "5-0".
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def pad_id(stream_id: str) -> str:
    """A stream id as a fixed-width string, so a sorted set's lexical order is stream order."""
    ms, seq = stream_order(stream_id)
    return f"{ms:015d}-{seq:08d}"


def unpad_id(padded: str) -> str:
    ms, _, seq = padded.partition("-")
    return f"{int(ms)}-{int(seq)}"
