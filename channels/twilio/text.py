"""What an outbound message looks like as SMS or WhatsApp: plain text, in numbered segments.

The Markdown is rendered by gateway.markdown's `to_text`: no markup characters, links
as "label (url)", bullets as "-" (in GSM-7, so a bullet does not turn the whole body
into 70-character UCS-2 segments).

Twilio refuses a body over 1,600 characters (error 21617), so a longer text goes
as several messages, each prefixed "(i/n) " inside that limit and split at
whitespace where possible. Characters are counted in UTF-16 code units, as
Twilio counts them: an emoji outside the Basic Multilingual Plane is two.
"""

from __future__ import annotations

from gateway.markdown import to_text
from gateway.messages import OutboundMessage

MAX_BODY = 1600
APPROVAL_HINT = "Reply YES to approve or NO to deny."


def render(message: OutboundMessage) -> str:
    """The SMS text of `message`: plain text, plus how to answer where it asks something."""
    text = to_text(message.text)
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
