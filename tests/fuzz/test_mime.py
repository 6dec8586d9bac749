"""Mail, fuzzed: arbitrary bytes and damaged real messages never break the readers.

`read_headers` runs before `250` on the SMTP path and `parse` in the worker; both
promise never to raise, and every input here must come back within the hang
bound. The inputs are random bytes, and the corpus of real client mail
(tests/channels/mail/*.eml) cut, spliced and sprinkled with MIME's own syntax.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzkit import FUZZ, SLOW_FUZZ, bounded, edits, mutate
from hypothesis import given
from hypothesis import strategies as st

from channels.email import tokens
from channels.email.headers import Headers, read_headers
from channels.email.parse import Mail, parse
from channels.email.quotes import new_text

CORPUS = {
    p.name: p.read_bytes() for p in sorted((Path(__file__).resolve().parents[1] / "channels" / "mail").glob("*.eml"))
}


def _read_everything(raw: bytes) -> None:
    with bounded():
        facts = read_headers(raw, "sender@example.com")
        mail = parse(raw)
        text = new_text(mail.text)
    assert isinstance(facts, Headers) and facts.message_id.startswith("<")
    assert isinstance(mail, Mail) and isinstance(text, str)
    assert all(isinstance(p.data, bytes) for p in mail.attachments)


def test_the_corpus_is_there():
    assert len(CORPUS) >= 10


@FUZZ
@given(raw=st.binary(max_size=4000))
def test_arbitrary_bytes(raw):
    _read_everything(raw)


@FUZZ
@given(name=st.sampled_from(sorted(CORPUS)), changes=edits, crlf=st.booleans())
def test_damaged_real_mail(name, changes, crlf):
    raw = CORPUS[name]
    if crlf:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    _read_everything(mutate(raw, changes))


@FUZZ
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "From",
                    "To",
                    "Reply-To",
                    "Subject",
                    "Message-ID",
                    "In-Reply-To",
                    "References",
                    "Content-Type",
                    "Content-Transfer-Encoding",
                    "Auto-Submitted",
                    "Return-Path",
                    "X",
                ]
            ),
            st.text(max_size=80)
            | st.sampled_from(
                [
                    "=?utf-8?b?////?=",
                    "=?x-unknown?q?=FF?=",
                    "<a@b> <c@d",
                    "multipart/mixed; boundary=",
                    "base64",
                    "quoted-printable",
                    '"a\\',
                    "<>",
                    "text/plain; charset=unknown-8bit",
                ]
            ),
        ),
        max_size=10,
    ),
    body=st.binary(max_size=500),
)
def test_headers_of_any_text_and_any_body(headers, body):
    head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8", "surrogatepass")
    _read_everything(head + b"\r\n" + body)


def test_a_deeply_nested_multipart_bomb_is_read_within_the_bound():
    depth = 2000
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
    _read_everything(
        b"From: a@example.com\r\nMessage-ID: <bomb@x>\r\n" + head + b"Content-Type: text/plain\r\n\r\nhello\r\n"
    )


def test_very_many_parts_are_capped():
    parts = b"".join(b"--b\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n" for _ in range(5000))
    raw = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    with bounded():
        mail = parse(raw)
    assert len(mail.attachments) <= 200 and any("parts" in p for p in mail.problems)


@FUZZ
@given(address=st.text(max_size=80), token=st.text(max_size=40))
def test_reply_tokens_never_verify_by_accident(address, token):
    key = b"k" * 32
    with bounded():
        base, found = tokens.split(address)
        assert tokens.verify(key, token) is None
    assert "+" not in base.partition("@")[0]
    # Only a token minted with the key names a thread.
    genuine = tokens.mint(key, "th_0123456789abcdef")
    assert tokens.verify(key, genuine) == "th_0123456789abcdef"
    assert tokens.verify(b"other" * 8, genuine) is None


@pytest.mark.slow
@SLOW_FUZZ
@given(name=st.sampled_from(sorted(CORPUS)), changes=edits)
def test_damaged_real_mail_long(name, changes):
    _read_everything(mutate(CORPUS[name], changes))
