"""The full MIME parse, run in the worker: body text and attachments.

`text/plain` is preferred, else HTML converted to text; any charset and transfer
encoding the stdlib knows, with fallbacks for the ones mail gets wrong (an
ISO-8859-1 label on Windows-1252 text, an unknown charset, broken base64).
Parsing never raises: what cannot be read is left out and named in `problems`.
"""

from __future__ import annotations

import binascii
import email.utils
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

from channels.email.headers import clean, header_block
from channels.email.htmltext import html_to_text
from channels.email.quotes import unflow

_PARSER = BytesParser(policy=policy.default)
# Labels that mail software applies to text in a wider encoding: decoding with the
# wider one is lossless for the narrow text (the WHATWG Encoding Standard does the same).
_WIDER = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
}
MAX_PARTS = 200  # a bomb of nested multiparts stops here


@dataclass
class Part:
    """An attachment's bytes and what the message says about them."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Mail:
    text: str = ""  # the whole body as text, quotes included
    html: bool = False  # the text came from an HTML part
    attachments: list[Part] = field(default_factory=list)
    report: bool = False  # a delivery or read report somewhere inside: a bounce
    problems: list[str] = field(default_factory=list)


def parse(raw: bytes) -> Mail:
    """Everything a person wrote in `raw`, as far as it can be read."""
    mail = Mail()
    try:
        msg = _PARSER.parsebytes(raw)
    except Exception as exc:
        mail.problems.append(f"unparseable: {exc}")
        mail.text = raw[len(header_block(raw)) :].decode("utf-8", "replace").strip()
        return mail
    body = _body(msg, mail)
    parts = _leaves(msg, mail)
    for part in parts:
        ctype = _ctype(part)
        if ctype in ("message/delivery-status", "message/disposition-notification", "message/feedback-report"):
            mail.report = True
        if body is not None and part is body:
            continue
        if _is_attachment(part, ctype):
            data = _bytes(part, mail)
            if data is not None:
                mail.attachments.append(Part(filename=_filename(part), content_type=ctype, data=data))
    return mail


def _body(msg: EmailMessage, mail: Mail) -> Message | None:
    """Pick and decode the body: plain text, else HTML (also when the plain part is blank)."""
    try:
        found = [msg.get_body(preferencelist=("plain",)), msg.get_body(preferencelist=("html",))]
    except Exception as exc:
        mail.problems.append(f"body: {exc}")
        found = []
    candidates = [part for part in found if part is not None]
    if not candidates and not msg.is_multipart() and _ctype(msg).startswith("text/"):
        candidates = [msg]  # a lone text part with an unusual subtype
    for part in candidates:
        text = _decode(part, mail)
        if _ctype(part) == "text/html":
            text = html_to_text(text)
        elif _param(part, "format") == "flowed":
            text = unflow(text, delsp=_param(part, "delsp") == "yes")
        if text.strip() or part is candidates[-1]:
            mail.text = text.replace("\r\n", "\n").strip()
            mail.html = _ctype(part) == "text/html"
            return part
    return None


def _leaves(msg: Message, mail: Mail) -> list[Message]:
    """Non-multipart parts, depth first; an attached message counts as one part."""
    out: list[Message] = []
    stack = [msg]
    while stack and len(out) < MAX_PARTS:
        part = stack.pop()
        ctype = _ctype(part)
        if part.is_multipart() and not ctype.startswith("message/"):
            payload = part.get_payload()
            stack.extend(reversed([p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []))
        else:
            out.append(part)
    if stack:
        mail.problems.append(f"more than {MAX_PARTS} parts; the rest ignored")
    return out


def _is_attachment(part: Message, ctype: str) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment" or _filename(part):
        return True
    # Inline text alternatives (the HTML twin of the plain body) are not attachments.
    return not ctype.startswith(("text/", "multipart/")) and ctype != "message/delivery-status"


def _decode(part: Message, mail: Mail) -> str:
    data = _bytes(part, mail) or b""
    charset = (part.get_content_charset() or "us-ascii").lower()
    # Undeclared or "ascii" 8-bit text is mostly UTF-8, else Windows-1252.
    tries = (
        ("utf-8", "cp1252") if charset in ("us-ascii", "ascii") else (_WIDER.get(charset, charset), charset, "utf-8")
    )
    for name in dict.fromkeys(tries):
        try:
            return data.decode(name)
        except (LookupError, ValueError):  # ValueError: decode errors, and a label with a NUL in it
            continue
    mail.problems.append(f"charset {charset!r} did not decode; replaced what did not")
    return data.decode("utf-8", "replace")


def _bytes(part: Message, mail: Mail) -> bytes | None:
    try:
        if _ctype(part).startswith("message/"):
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            return inner.as_bytes() if isinstance(inner, Message) else str(inner).encode("utf-8", "replace")
        if (part.get("Content-Transfer-Encoding") or "").strip().lower() == "base64":
            return _base64(str(part.get_payload()), mail)
        data = part.get_payload(decode=True)
        return data if isinstance(data, bytes) else b""
    except Exception as exc:
        mail.problems.append(f"part {_ctype(part)}: {exc}")
        return None


def _base64(text: str, mail: Mail) -> bytes:
    """Decoded base64; a broken body (truncated, stray characters) yields its readable start."""
    try:
        return binascii.a2b_base64(text.encode("ascii", "ignore"))
    except binascii.Error:
        usable = re.sub(r"[^A-Za-z0-9+/]", "", text)
        mail.problems.append("broken base64; decoded what could be")
        return binascii.a2b_base64(usable[: len(usable) - len(usable) % 4])


def _ctype(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return clean(str(name))[:255] if name else None


def _param(part: Message, name: str) -> str:
    """A Content-Type parameter, lower-cased; an RFC 2231 encoded one is decoded first."""
    return email.utils.collapse_rfc2231_value(part.get_param(name, "", header="content-type")).lower()
