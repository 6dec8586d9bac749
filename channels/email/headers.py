"""What the SMTP path reads of a message: its header block only.

Everything needed before `250` — the dedupe key, who wrote, the thread it
answers, whether it is a robot — comes from the headers; the body waits for the
worker. Reading never raises: a header that does not parse counts as absent.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr

_IDS = re.compile(r"<([^<>\s]+)>")
_PARSER = BytesHeaderParser(policy=policy.default)
# Kept from a long References chain: the root and the newest (RFC 5322 §3.6.4 lets
# a writer trim the middle; the root and the parent are what threading needs).
MAX_REFERENCES = 30
# Local parts that are machines, not people: answering them risks a loop.
ROBOTS = re.compile(r"^(mailer-daemon|postmaster|no[-_.]?reply|do[-_.]?not[-_.]?reply)([-+_.].*)?$")


@dataclass
class Headers:
    """The header facts of one message."""

    message_id: str  # "<...>"; synthesised from the content when missing
    sender: str  # the From address, lower-cased ("" when none parses)
    reply_address: str  # Reply-To, else From: where answers go
    subject: str = ""
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    robot: str | None = None  # why this mail must not be answered (RFC 3834), if it must not

    @property
    def root(self) -> str:
        """The thread root: first of References, else In-Reply-To, else this message."""
        return (self.references or self.in_reply_to or [self.message_id])[0]

    def ancestors(self) -> list[str]:
        """Message-IDs this one answers, newest first."""
        return list(dict.fromkeys([*self.in_reply_to[::-1], *self.references[::-1]]))


def read_headers(raw: bytes, mail_from: str = "") -> Headers:
    """The header facts of `raw`; `mail_from` is the envelope sender ("<>" for a bounce)."""
    msg = _PARSER.parsebytes(header_block(raw))
    message_id = first_id(header(msg, "Message-ID")) or f"<{hashlib.sha256(raw).hexdigest()[:32]}@frontdesk.invalid>"
    sender = address_of(header(msg, "From")) or _envelope(mail_from)
    reply_address = address_of(header(msg, "Reply-To")) or sender
    found = Headers(
        message_id=message_id,
        sender=sender,
        reply_address=reply_address,
        subject=" ".join(header(msg, "Subject", decode=True).split())[:998],
        in_reply_to=ids(header(msg, "In-Reply-To"))[:5],
        references=trim_references(ids(header(msg, "References"))),
    )
    found.robot = robot_reason(msg, mail_from, sender)
    return found


def robot_reason(msg: EmailMessage, mail_from: str, sender: str) -> str | None:
    """Why a message must get no answer (RFC 3834 §2, §5), or None for a person's mail."""
    if mail_from in ("", "<>") or header(msg, "Return-Path").strip() == "<>":
        return "bounce"  # the null reverse-path (RFC 5321 §4.5.5)
    auto = header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto and auto != "no":
        return "auto_submitted"
    if header(msg, "Precedence").strip().lower() in ("bulk", "list", "junk"):
        return "precedence"
    if header(msg, "List-Id"):
        return "list"
    if header(msg, "X-Autoreply") or header(msg, "X-Autorespond"):
        return "auto_reply"  # vacation programs that predate RFC 3834
    if header(msg, "Content-Type").split(";")[0].strip().lower() == "multipart/report":
        return "report"  # delivery and read reports (RFC 6522)
    local = (sender or _envelope(mail_from)).partition("@")[0]
    if not local or ROBOTS.match(local):
        return "robot_sender"
    return None


def header(msg: EmailMessage, name: str, *, decode: bool = False) -> str:
    """One header's value ("" when absent or unreadable); `decode` turns encoded-words into text.

    Undecoded, the value is the raw source, unfolded: cheaper than the policy's
    header objects, and an ID or address list reads the same either way.
    """
    try:
        if decode:
            value = msg.get(name)
            return clean(str(value)) if value is not None else ""
        for key, value in msg.raw_items():
            if key.lower() == name.lower():
                return clean(" ".join(value.split()))
    except Exception:
        return ""
    return ""


def clean(text: str) -> str:
    """Undo the parser's surrogate escapes: raw 8-bit header bytes read as UTF-8, else cp1252."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def ids(value: str) -> list[str]:
    """The `<id>` tokens of a Message-ID list header."""
    return [f"<{m}>" for m in _IDS.findall(value)]


def first_id(value: str) -> str:
    found = ids(value)
    if found:
        return found[0]
    bare = value.strip().split()
    return f"<{bare[0].strip('<>')}>" if bare and "@" in bare[0] else ""


def address_of(value: str) -> str:
    """The first address of an address header, lower-cased."""
    if not value:
        return ""
    try:
        pairs = getaddresses([value])
    except Exception:
        pairs = [parseaddr(value)]
    for _, addr in pairs:
        if "@" in addr:
            return addr.strip().lower()
    return ""


def header_block(raw: bytes) -> bytes:
    """The header block only: the parser would otherwise copy the whole body along."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return raw[: min(ends) + 2] if ends else raw


def _envelope(mail_from: str) -> str:
    return "" if mail_from in ("", "<>") else mail_from.strip("<>").lower()


def trim_references(refs: list[str]) -> list[str]:
    """A References chain without repeats, cut to the root and the newest MAX_REFERENCES - 1 ids."""
    refs = list(dict.fromkeys(refs))
    if len(refs) <= MAX_REFERENCES:
        return refs
    return [refs[0], *refs[-(MAX_REFERENCES - 1) :]]
