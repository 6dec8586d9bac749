"""The new text of a reply: quoted history and signatures cut away.

Mail clients mark what they quote differently; the markers handled are those of
the common ones:

- `> ` line prefixes (Thunderbird, Apple Mail and Gmail in plain text, mutt);
- an attribution line before the quote, "On <date>, <name> wrote:" and its
  translations, which Gmail may wrap over two lines;
- Outlook's "-----Original Message-----" or a rule of underscores, and its
  header block ("From: … Sent: … To: … Subject: …") with no marker at all;
- signatures: the "-- " separator (RFC 3676 §4.3) and the mobile footers
  ("Sent from my iPhone", "Get Outlook for Android").

Quoted lines and their attribution are dropped wherever they stand, so a reply
written below or between quotes keeps its own lines; an Outlook marker or a
signature ends the new text. If nothing is left, the whole text is returned: an
odd reply is better read whole than lost.
"""

from __future__ import annotations

import re

_ATTRIBUTION = re.compile(
    r"^\s*(on|le|am|el|op|il|em)\b.{4,300}\b(wrote|a écrit|schrieb|escribió|schreef|ha scritto|escreveu)\b.{0,300}?:\s*$",
    re.I | re.S,
)
_ORIGINAL = re.compile(
    r"^\s*(-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|mensaje original)\s*-{2,}|_{10,})\s*$",
    re.I,
)
_HEADER_LINE = re.compile(
    r"^\s*\*?(from|von|de|sent|gesendet|envoyé|date|datum|to|an|à|para|cc|subject|betreff|objet|asunto)\*?\s*:", re.I
)
_SIGNATURE = re.compile(
    r"^\s*--\s*$|^\s*(sent from my \w+|sent from (mail|outlook|yahoo mail)\b|get outlook for \w+"
    r"|envoyé de mon \w+|von meinem \w+ gesendet)",
    re.I,
)


def new_text(text: str) -> str:
    """The part of `text` the writer wrote this time."""
    lines = text.replace("\r\n", "\n").split("\n")
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _is_end(lines, index):
            break
        skip = _attribution(lines, index)
        if skip:
            index += skip
            continue
        if not line.lstrip().startswith(">"):
            kept.append(line)
        index += 1
    return _tidy(kept) or text.strip()


def _is_end(lines: list[str], index: int) -> bool:
    line = lines[index]
    if _ORIGINAL.match(line) or _SIGNATURE.match(line):
        return True
    if _HEADER_LINE.match(line) and line.lstrip().lstrip("*").lower().startswith(("from", "von", "de")):
        # Outlook's block: From: then, within a few lines, Sent/Date and Subject/To.
        block = lines[index + 1 : index + 6]
        return sum(1 for b in block if _HEADER_LINE.match(b)) >= 2
    return False


def _attribution(lines: list[str], index: int) -> int:
    """How many lines an attribution ("On …, X wrote:") spans here, 0 if none."""
    for span in (1, 2):
        joined = " ".join(lines[index : index + span])
        if _ATTRIBUTION.match(joined) and _quote_follows(lines, index + span):
            return span
    return 0


def _quote_follows(lines: list[str], start: int) -> bool:
    for line in lines[start:]:
        if line.strip():
            return line.lstrip().startswith(">")
    return True


def _tidy(lines: list[str]) -> str:
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(line.rstrip() for line in lines).strip("\n").strip()


def unflow(text: str, delsp: bool = False) -> str:
    """Join the soft line breaks of format=flowed text (RFC 3676 §4.2)."""
    out: list[str] = []
    carry: str | None = None
    carry_depth = 0
    for line in text.replace("\r\n", "\n").split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:]
        if body.startswith(" "):
            body = body[1:]  # space-stuffing (§4.4)
        if carry is not None and depth == carry_depth:
            body = carry + body
        elif carry is not None:
            out.append(">" * carry_depth + (" " if carry_depth else "") + carry)
        carry = None
        if body.endswith(" ") and body != "-- ":
            carry, carry_depth = (body[:-1] if delsp else body), depth
            continue
        out.append(">" * depth + (" " if depth else "") + body)
    if carry is not None:
        out.append(">" * carry_depth + (" " if carry_depth else "") + carry)
    return "\n".join(out)
