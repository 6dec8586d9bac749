"""What an outbound message looks like as SMS: plain text, in numbered segments.

Twilio refuses a body over 1,600 characters (error 21617), so a longer text goes
as several messages, each prefixed "(i/n) " inside that limit and split at
whitespace where possible. Characters are counted in UTF-16 code units, as
Twilio counts them: an emoji outside the Basic Multilingual Plane is two.
"""

from __future__ import annotations

import re

from gateway.messages import OutboundMessage

MAX_BODY = 1600
APPROVAL_HINT = "Reply YES to approve or NO to deny."

_MARKDOWN: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M), r"\1"),  # fenced code: keep the code
    (re.compile(r"!\[([^\]]*)\]\(\s*([^)\s]+)[^)]*\)"), r"\1 (\2)"),  # images
    (re.compile(r"\[([^\]]+)\]\(\s*([^)\s]+)[^)]*\)"), r"\1 (\2)"),  # links keep their target
    (re.compile(r"<((?:https?|mailto):[^>\s]+)>"), r"\1"),  # autolinks
    (re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.M), r"\1"),  # headings
    (re.compile(r"^[ \t]{0,3}>[ \t]?", re.M), ""),  # block quotes
    (re.compile(r"^[ \t]{0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M), ""),  # rules
    (re.compile(r"^([ \t]*)[*+][ \t]+", re.M), r"\1- "),  # bullets, before `*` means emphasis
    (re.compile(r"`([^`\n]+)`"), r"\1"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S), r"\2"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S), r"\1"),
    # Single `*`/`_` only around words, so snake_case names and 2*3 survive.
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])"), r"\1"),
    (re.compile(r"\n{3,}"), "\n\n"),
]


def plain_text(markdown: str) -> str:
    """`markdown` as a phone shows it: markup removed, link targets kept."""
    text = markdown.replace("\r\n", "\n")
    for pattern, replacement in _MARKDOWN:
        text = pattern.sub(replacement, text)
    return text.strip()


def render(message: OutboundMessage) -> str:
    """The SMS text of `message`: plain text, plus how to answer where it asks something."""
    text = plain_text(message.text)
    if message.kind == "approval":
        # The core reads YES/NO (and synonyms) as the decision; anything else is re-asked once.
        return f"{text}\n\n{APPROVAL_HINT}"
    if message.choices:
        return f"{text}\n\nReply with one of: {', '.join(message.choices)}"
    return text


def units(text: str) -> int:
    """Length in UTF-16 code units, the way Twilio measures a body."""
    return len(text.encode("utf-16-le")) // 2


def segments(text: str, limit: int = MAX_BODY) -> list[str]:
    """`text` as bodies of at most `limit` units, numbered "(i/n) " when there are several."""
    if units(text) <= limit:
        return [text]
    total = 2
    while True:
        width = units(f"({total}/{total}) ")
        chunks = _chunk(text, limit - width)
        if len(chunks) <= total:
            # Fewer chunks than guessed only shortens the prefix, so they still fit.
            return [f"({i}/{len(chunks)}) {chunk}" for i, chunk in enumerate(chunks, 1)]
        total = len(chunks)


def _chunk(text: str, budget: int) -> list[str]:
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        if units(rest) <= budget:
            chunks.append(rest)
            break
        cut = _fit(rest, budget)
        space = max(rest.rfind(" ", 0, cut + 1), rest.rfind("\n", 0, cut + 1))
        if space > 0:
            cut = space  # the whitespace itself is dropped at the boundary
        chunks.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return chunks


def _fit(text: str, budget: int) -> int:
    """The longest prefix (in characters) of `text` within `budget` units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > budget:
            return index
    return len(text)
