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
import operator
import re
from collections import OrderedDict
from dataclasses import dataclass, field
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


# A word YAML writes bare, as a key or a value: an identifier that no YAML 1.1 resolver reads
# as a bool or null (in any case: stricter than the resolver, never looser), short enough that
# the emitter never folds it. Tool arguments name intents and modes this way.
_PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESERVED = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null"})


def _plain_word(text: str) -> bool:
    return _PLAIN_WORD.fullmatch(text) is not None and text.lower() not in _RESERVED


def _plain_item(key: Any, value: Any) -> bool:
    return (
        type(key) is str
        and (
            value is None
            or type(value) in (int, bool)
            or (type(value) is float and math.isfinite(value) and "e" not in repr(value))
            or (type(value) is str and _plain_word(value))
        )
        and _plain_word(key)
    )


# libyaml's emitter where PyYAML was built with it (its wheels are): the same text as the
# pure-Python SafeDumper at a fraction of the cost.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _attrs(**attrs: Any) -> str:
    return "".join(f' {k}="{html.escape(str(v))}"' for k, v in attrs.items() if v not in (None, ""))


def _block(tag: str, body: str, **attrs: Any) -> str:
    return f"<{tag}{_attrs(**attrs)}>\n{body}\n</{tag}>"


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
    return "\n".join(_window(thread, None if budget_tokens is None else budget_tokens * CHARS_PER_TOKEN))


# Each turn renders the whole thread again, and a worker keeps a thread's events while it
# drains it (and ThreadStore.load hands back the events it already holds), so all but the
# newest were rendered on the previous turn: a 20-turn thread was rendered 20 times over, and
# a 1,000-event thread cost 12.6 ms of a worker's CPU a step against 0.8 ms for 10 events,
# two fifths of it in PyYAML (benchmarks/, scenario 9a). Kept per thread: the events rendered
# (the objects themselves: events are frozen, and identity proves the thread still holds
# them), their blocks, and the window last cut from them for a budget, with where its
# compaction stopped: a thread only grows and the budget stays, so the blocks compacted
# last turn are compacted this turn too, and only what is new is rendered and weighed.
@dataclass
class _Memo:
    events: list[Any]
    blocks: list[str | None]
    limit: int | None = None
    window: list[str] = field(default_factory=list)  # the blocks shown, some compacted
    compactable: list[bool] = field(default_factory=list)  # per block shown
    size: int = 0  # characters of the window, a newline after each block
    cursor: int = 0  # compaction looked at the window's blocks before this one
    counted: int = 0  # events taken into the window

    def cut_for(self, limit: int | None) -> None:
        """Start the window over, for another budget."""
        self.limit, self.window, self.compactable, self.size, self.cursor, self.counted = limit, [], [], 0, 0, 0


_MEMO: OrderedDict[str, _Memo] = OrderedDict()
# The threads a worker has in flight fit; the least recently rendered go first.
_MEMO_THREADS = 4096


def _window(thread: Thread, limit: int | None) -> list[str]:
    memo = _memo(thread)
    events = thread.events
    if memo.limit != limit or memo.counted > len(events):  # another budget, or a prefix (the dashboard)
        memo.cut_for(limit)
    for event, text in zip(events[memo.counted :], memo.blocks[memo.counted : len(events)], strict=True):
        if text is not None:
            memo.window.append(text)
            memo.compactable.append(event.type in ("tool_result", "context"))
            memo.size += len(text) + 1
    memo.counted = len(events)
    if limit is not None:
        _compact(memo, limit)
    return memo.window[:]


def _memo(thread: Thread) -> _Memo:
    """This thread's memo, with render_event() of each of its events (only the new ones rendered)."""
    events = thread.events
    memo = _MEMO.get(thread.id)
    if memo is not None:
        n = min(len(memo.events), len(events))
        if all(map(operator.is_, memo.events[:n], events[:n])):
            _MEMO.move_to_end(thread.id)
            if len(events) > n:  # the thread grew: render only what is new
                memo.events.extend(events[n:])
                memo.blocks.extend(render_event(e) for e in events[n:])
            return memo
    memo = _Memo(list(events), [render_event(e) for e in events])
    _MEMO[thread.id] = memo
    if len(_MEMO) > _MEMO_THREADS:
        _MEMO.popitem(last=False)
    return memo


def _compact(memo: _Memo, limit: int) -> None:
    """Compact the oldest tool results and fetches until the window fits `limit` (people stay verbatim)."""
    window, compactable = memo.window, memo.compactable
    while memo.cursor < len(window) and memo.size > limit:
        i = memo.cursor
        memo.cursor += 1
        if not compactable[i]:
            continue
        text = window[i]
        head, _, rest = text.partition("\n")
        body, _, tail = rest.rpartition("\n")
        short = f"{head}\n[compacted: {len(body)} characters]\n{tail}"
        memo.size -= len(text) - len(short)
        window[i], compactable[i] = short, False


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
