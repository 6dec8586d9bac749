"""Own your context window (factor 3): the thread rendered as compact tagged blocks.

    <user_message from="sms:+15550001" channel="sms">
    what is 6 times 7?
    </user_message>
    <tool_call id="c1" tool="multiply">
    a: 6
    b: 7
    </tool_call>
    <tool_result id="c1">
    42
    </tool_result>

One block per event; arguments and results as YAML lines. Everything that came
from outside (people, tools, fetches) is untrusted data: `<` and `>` in it are
escaped, so no message can close a block or open one of its own, and none of it
ever reaches the system prompt.

A budget guard keeps the window under a size: the oldest tool results and
fetches are compacted first; what people said is always kept verbatim.
"""

from __future__ import annotations

import html
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, assert_never

import yaml

from gateway.events import Event, Thread

CHARS_PER_TOKEN = 4  # a coarse, vendor-neutral estimate; the guard needs a bound, not a count
_BLOCK = re.compile(r"<(\w+)((?: \w+=\"[^\"]*\")*)>\n(.*?)\n</\1>", re.S)
_ATTR = re.compile(r"(\w+)=\"([^\"]*)\"")


def untrusted(text: str) -> str:
    return html.escape(text, quote=False)


def as_yaml(value: Any) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, (dict, list, tuple)):
        return _scalar(value)
    if isinstance(value, dict) and value and all(_plain_item(k, v) for k, v in value.items()):
        # Tool arguments are mostly a few named numbers or flags: written here exactly as the
        # dumper would write them, at a twentieth of its cost (benchmarks/, scenario 4).
        return "\n".join(f"{k}: {_scalar(v)}" for k, v in value.items())
    return yaml.dump(value, Dumper=_DUMPER, default_flow_style=False, sort_keys=False, allow_unicode=True).strip()


def _scalar(value: Any) -> str:
    if type(value) is float:
        return repr(value)  # as the dumper writes a finite float without an exponent (`_plain_item`)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# A key YAML writes bare: a lower-case identifier that no YAML 1.1 resolver reads as a bool or null.
_PLAIN_KEY = re.compile(r"[a-z_][a-z0-9_]*")
_RESERVED = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null"})


def _plain_item(key: Any, value: Any) -> bool:
    return (
        type(key) is str
        and (
            value is None
            or type(value) in (int, bool)
            or (type(value) is float and math.isfinite(value) and "e" not in repr(value))
        )
        and _PLAIN_KEY.fullmatch(key) is not None
        and key not in _RESERVED
    )


# libyaml's emitter where PyYAML was built with it (its wheels are): the same text as the
# pure-Python SafeDumper at a fraction of the cost.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _attrs(**attrs: Any) -> str:
    return "".join(f' {k}="{html.escape(str(v))}"' for k, v in attrs.items() if v not in (None, ""))


def _block(tag: str, body: str, **attrs: Any) -> str:
    return f"<{tag}{_attrs(**attrs)}>\n{body}\n</{tag}>"


@dataclass
class _Rendered:
    text: str
    compactable: bool = False


def render_event(event: Event) -> str | None:
    """One event as a block; None for bookkeeping the model does not need."""
    match event.type:
        case "user_message" | "human_response":
            body = untrusted(event.text)
            if event.data:
                body += "\n" + _block("data", untrusted(as_yaml(event.data)))
            for a in event.attachments:
                body += "\n" + _block("attachment", "", name=a.filename, type=a.content_type, size=a.size)
            return _block(event.type, body, **{"from": event.sender, "channel": event.channel})
        case "tool_call" | "approval_requested":
            return _block(event.type, untrusted(as_yaml(event.arguments)), id=event.call_id, tool=event.tool)
        case "tool_result":
            return _block(event.type, untrusted(as_yaml(event.result)), id=event.call_id)
        case "context":
            return _block(event.type, untrusted(as_yaml(event.result)), name=event.name)
        case "error":
            return _block(event.type, untrusted(event.message), kind=event.kind)
        case "request_human_input":
            body = untrusted(event.text)
            if event.choices:
                body += "\nchoices: " + ", ".join(untrusted(c) for c in event.choices)
            return _block(event.type, body, to=event.contact.identity if event.contact else None)
        case "approval_decision":
            approved = str(event.approved).lower()
            return _block(event.type, untrusted(event.comment or ""), id=event.call_id, approved=approved, by=event.by)
        case "done_for_now":
            return _block(event.type, untrusted(event.text))
        case "timeout":
            return _block(event.type, "no answer before the deadline", request=event.request_index)
        case "delivery":
            if event.status != "failed":
                return None
            return _block(event.type, untrusted(event.detail or ""), status=event.status, channel=event.channel)
        case "note":
            return None
        case _:
            assert_never(event.type)


def render_context(thread: Thread, budget_tokens: int | None = None) -> str:
    """The thread as the model reads it, compacted to fit `budget_tokens` when given."""
    parts: list[_Rendered] = []
    for event, text in zip(thread.events, _blocks(thread), strict=True):
        if text is not None:
            parts.append(_Rendered(text, compactable=event.type in ("tool_result", "context")))
    if budget_tokens is not None:
        _compact(parts, budget_tokens * CHARS_PER_TOKEN)
    return "\n".join(p.text for p in parts)


# Each turn renders the whole thread again, and a worker keeps a thread's events while it
# drains it, so all but the newest were rendered on the previous turn (a 20-turn thread was
# rendered 20 times over; benchmarks/, scenario 4). Kept per thread: the events rendered (the
# objects themselves: events are frozen, and identity proves the thread still holds them) and
# their blocks. The threads a worker has in flight fit; the least recently rendered go first.
_MEMO: OrderedDict[str, tuple[list[Any], list[str | None]]] = OrderedDict()
_MEMO_THREADS = 4096


def _blocks(thread: Thread) -> list[str | None]:
    """render_event() of each of the thread's events, reusing what this thread's last render made."""
    events = thread.events
    hit = _MEMO.get(thread.id)
    if hit is not None:
        seen, texts = hit
        n = min(len(seen), len(events))
        if all(a is b for a, b in zip(seen[:n], events[:n], strict=True)):
            _MEMO.move_to_end(thread.id)
            if len(events) > n:  # the thread grew: render only what is new
                seen.extend(events[n:])
                texts.extend(render_event(e) for e in events[n:])
            return texts[: len(events)]
    texts = [render_event(e) for e in events]
    _MEMO[thread.id] = (list(events), texts)
    if len(_MEMO) > _MEMO_THREADS:
        _MEMO.popitem(last=False)
    return texts[:]


def _compact(parts: list[_Rendered], limit: int) -> None:
    total = sum(len(p.text) + 1 for p in parts)
    for part in parts:  # oldest first
        if total <= limit:
            return
        if not part.compactable:
            continue
        head, _, rest = part.text.partition("\n")
        body, _, tail = rest.rpartition("\n")
        short = f"{head}\n[compacted: {len(body)} characters]\n{tail}"
        total -= len(part.text) - len(short)
        part.text, part.compactable = short, False


@dataclass(frozen=True)
class Block:
    tag: str
    attrs: dict[str, str]
    body: str


def parse_blocks(context: str) -> list[Block]:
    """The blocks of a rendered context, bodies unescaped (the demo model reads this)."""
    return [
        Block(m.group(1), dict(_ATTR.findall(m.group(2))), html.unescape(m.group(3))) for m in _BLOCK.finditer(context)
    ]
