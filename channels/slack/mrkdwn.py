"""Markdown (what models write) to Slack mrkdwn, and mrkdwn cut to Slack's size limits.

mrkdwn differs from Markdown: `*bold*`, `_italic_`, `~strike~`, `<url|label>`
links, no headings, and `&`, `<`, `>` must be escaped as HTML entities
(https://docs.slack.dev/messaging/formatting-message-text). Code is kept as is,
apart from the escaping and the language tag after a fence, which Slack would show.
"""

from __future__ import annotations

import re

# A section block's text holds at most 3,000 characters, and Slack advises keeping a
# message's `text` under 4,000; one limit under both keeps every part postable either way.
LIMIT = 3000
FENCE = "```"

_FENCE_LINE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?:\[([ xX])\]\s+)?(.*)$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_SLACK_TOKEN = re.compile(r"<[@#!][A-Za-z0-9^|_.\-]+>")  # <@U123>, <#C123>, <!here>: already Slack syntax
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_BOLD_MARK = "\x02"
_IDENTITY = re.compile(r"\bslack:([UW][A-Z0-9]+)\b")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """The Markdown text as Slack mrkdwn."""
    out: list[str] = []
    in_code = False
    for line in (markdown or "").splitlines():
        if _FENCE_LINE.match(line):
            in_code = not in_code
            out.append(FENCE)
        elif in_code:
            out.append(escape(line))
        else:
            out.append(_line(line))
    if in_code:
        out.append(FENCE)
    return "\n".join(out)


def mentions(mrkdwn: str) -> str:
    """`slack:U123` identities (as the core writes them) as Slack mentions."""
    return _IDENTITY.sub(r"<@\1>", mrkdwn)


def _line(line: str) -> str:
    if _RULE.match(line):
        return "――――――――"
    if heading := _HEADING.match(line):
        return f"*{_inline(heading.group(1)).replace('*', '')}*" if heading.group(1) else ""
    if quote := _QUOTE.match(line):
        return "> " + _line(quote.group(1))  # the one `>` that must stay unescaped
    if bullet := _BULLET.match(line):
        indent, box, rest = bullet.groups()
        mark = "•" if box is None else ("☑" if box.lower() == "x" else "☐")
        return f"{indent}{mark} {_inline(rest)}"
    return _inline(line)


def _inline(text: str) -> str:
    pieces, last = [], 0
    for span in _CODE_SPAN.finditer(text):
        pieces.append(_format(text[last : span.start()]))
        pieces.append(f"`{escape(span.group(2))}`")
        last = span.end()
    pieces.append(_format(text[last:]))
    return "".join(pieces)


def _format(text: str) -> str:
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return f"\x00{len(kept) - 1}\x00"

    text = _IMAGE.sub(lambda m: keep(_link(m.group(2), m.group(1))), text)
    text = _LINK.sub(lambda m: keep(_link(m.group(2), m.group(1))), text)
    text = _AUTOLINK.sub(lambda m: keep(f"<{escape(m.group(1))}>"), text)
    text = _SLACK_TOKEN.sub(lambda m: keep(m.group(0)), text)
    text = escape(text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], text)


def _link(url: str, label: str) -> str:
    label = escape(label.replace("|", "∣").strip())
    return f"<{escape(url)}|{label}>" if label else f"<{escape(url)}>"


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
