"""Markdown (what models write) as Slack mrkdwn, and mrkdwn cut to Slack's size limits.

mrkdwn differs from Markdown: `*bold*`, `_italic_`, `~strike~`, `<url|label>`
links, no headings, and `&`, `<`, `>` in text must be escaped as HTML entities
(https://docs.slack.dev/messaging/formatting-message-text). The Markdown is parsed
by gateway.markdown (one parser for every channel); this module only renders it.
Code keeps its text, escaped, without the language tag after a fence (Slack would show it).

A text whose structure mrkdwn loses (headings, nested lists) or that needs more
than one mrkdwn part goes as Slack's `markdown` block instead (standard Markdown, up to
12,000 characters, https://docs.slack.dev/reference/block-kit/blocks/markdown-block),
re-rendered from the tree so only what the parser accepted is markup, with the mrkdwn
as the message's `text` (what notifications show).
"""

from __future__ import annotations

import re
from typing import Any

from gateway.markdown import Node, Renderer, parse, to_markdown

# A section block's text holds at most 3,000 characters, and Slack advises keeping a
# message's `text` under 4,000; one limit under both keeps every part postable either way.
LIMIT = 3000
MARKDOWN_LIMIT = 12000  # a markdown block's text, cumulative over the message's markdown blocks
FENCE = "```"

_SLACK_TOKEN = re.compile(r"(<[@#!][A-Za-z0-9^|_.\-]+>)")  # <@U123>, <#C123>, <!here>: already Slack syntax
_IDENTITY = re.compile(r"\bslack:([UW][A-Z0-9]+)\b")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Mrkdwn(Renderer):
    bullet = "•"

    def __init__(self) -> None:
        super().__init__()
        self.bold = 0  # inside a bold heading, where a nested `*` would end the bold early

    def heading(self, node: Node, level: int) -> str:
        self.bold += 1
        try:
            inner = self.inline(node)
        finally:
            self.bold -= 1
        return f"*{inner}*" if inner.strip() else ""

    def quote(self, body: str) -> str:
        return "\n".join(f"> {line}".rstrip() for line in body.split("\n"))  # the one `>` left unescaped

    def code(self, code: str, language: str) -> str:
        return f"{FENCE}\n{escape(code)}\n{FENCE}"

    def rule(self) -> str:
        return "――――――――"

    def text(self, text: str) -> str:
        pieces = _SLACK_TOKEN.split(text)  # odd pieces are the tokens, kept as written
        return "".join(piece if i % 2 else escape(piece) for i, piece in enumerate(pieces))

    def code_span(self, code: str) -> str:
        return f"`{escape(code)}`"

    def strong(self, inner: str) -> str:
        return inner if self.bold else f"*{inner}*"

    def em(self, inner: str) -> str:
        return f"_{inner}_"

    def strike(self, inner: str) -> str:
        return f"~{inner}~"

    def link(self, url: str, label: str, *, auto: bool) -> str:
        # The URL is markdown-it's normalised one: `<`, `>`, `|` and spaces are %-encoded, `&` stays.
        label = label.replace("|", "∣").strip()
        return f"<{url}>" if auto or not label else f"<{url}|{label}>"


def to_mrkdwn(markdown: str) -> str:
    """The Markdown text as Slack mrkdwn."""
    return _Mrkdwn().render(markdown)


def mentions(mrkdwn: str) -> str:
    """`slack:U123` identities (as the core writes them) as Slack mentions."""
    return _IDENTITY.sub(r"<@\1>", mrkdwn)


def markdown_block(markdown: str, *, parts: int) -> dict[str, Any] | None:
    """Slack's `markdown` block for `markdown` where it serves better than `parts` mrkdwn posts, else None."""
    if parts <= 1 and not _loses_structure(parse(markdown)):
        return None
    if _SLACK_TOKEN.search(markdown):
        return None  # mentions are mrkdwn syntax; Slack documents none for the markdown block
    text = to_markdown(markdown)
    return {"type": "markdown", "text": text} if 0 < len(text) <= MARKDOWN_LIMIT else None


def _loses_structure(node: Node, lists: int = 0) -> bool:
    """Whether mrkdwn would flatten something here: a heading, a list in a list.

    Tables do not count: the markdown block has none either (both get one line a row).
    """
    if node.type == "heading" or (lists and node.type in ("bullet_list", "ordered_list")):
        return True
    inside = lists + (node.type in ("bullet_list", "ordered_list"))
    return any(_loses_structure(child, inside) for child in node.children if child.type != "inline")


def split(text: str, limit: int = LIMIT) -> list[str]:
    """`text` in parts of at most `limit` characters, cut at line ends (else spaces).

    A code block cut in two is closed at the end of one part and reopened in the
    next, so each part renders on its own.
    """
    if len(text) <= limit:
        return [text] if text.strip() else []
    budget = limit - len(FENCE) - 1  # room to close a code block left open
    parts: list[str] = []
    lines: list[str] = []
    size = 0
    in_code = False

    def flush() -> None:
        nonlocal lines, size
        body = lines + ([FENCE] if in_code else [])
        if any(line.strip() and line != FENCE for line in body):
            parts.append("\n".join(body))
        lines = [FENCE] if in_code else []
        size = len(FENCE) if in_code else 0

    for line in text.split("\n"):
        for piece in _pieces(line, budget - len(FENCE) - 1):
            if lines and size + 1 + len(piece) > budget:
                flush()
            size += len(piece) + (1 if lines else 0)
            lines.append(piece)
        if line.strip() == FENCE:
            in_code = not in_code
    flush()
    return parts


_ENTITIES = ("&amp;", "&lt;", "&gt;")


def _pieces(line: str, width: int) -> list[str]:
    """A line longer than `width` cut at its last space within reach (else anywhere but inside an entity)."""
    pieces = []
    while len(line) > width:
        cut = line.rfind(" ", width // 2, width)
        if cut <= 0:
            cut = width
            amp = line.rfind("&", cut - 4, cut)
            if amp > 0 and line.startswith(_ENTITIES, amp):
                cut = amp
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces
