"""The mail sender checks, fuzzed: damaged signatures and headers never raise, and never pass when signed parts change.

`Authenticator.verify` runs in the worker on every mail and `strip` on the SMTP
path; both must answer for any bytes. dkimpy raises more than its own errors on
a damaged signature (binascii.Error, IndexError): each is a failed check here.
"""

from __future__ import annotations

import asyncio

from dkimkit import Dns, crlf, new_key, sign
from fuzzkit import FUZZ, edits, mutate
from helpers import make_settings
from hypothesis import given
from hypothesis import strategies as st

from channels.email.auth import RESULTS, Authenticator, field_name, fields

KEY = new_key()
DNS = Dns()
DNS.publish("example.com", KEY)
MAIL = crlf(
    "From: Alice <alice@example.com>\nTo: a@frontdesk.localhost\nSubject: Re: Deploy\nMessage-ID: <a1@example.com>\n\nAPPROVE\n"
)
SIGNED = sign(MAIL, "example.com", KEY)
AUTH = Authenticator(make_settings(None, "t", email_trusted_authserv_id="mx.example.com"), DNS)


def test_the_unchanged_message_passes():
    assert asyncio.run(AUTH.verify(SIGNED, "alice@example.com")).passed


@FUZZ
@given(changes=edits)
def test_a_damaged_signed_message_is_answered_and_passes_only_if_what_is_signed_survives(changes):
    damaged = mutate(SIGNED, changes)
    verdict = asyncio.run(AUTH.verify(damaged, "alice@example.com"))
    if verdict.passed:
        # relaxed header canonicalisation forgives whitespace; the signed words and body must be intact
        assert b"APPROVE" in damaged and b"alice@example.com" in damaged and b"<a1@example.com>" in damaged


@FUZZ
@given(
    headers=st.lists(
        st.sampled_from(
            [
                b"Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\r\n",
                b"authentication-results:MX.EXAMPLE.COM 1;dkim=pass header.d=example.com\r\n",
                b"Authentication-Results: other.example; dmarc=pass\r\n",
                b"Authentication-Results: (c) mx.example.com;\r\n spf=pass smtp.mailfrom=a@example.com\r\n",
                b"Received: from x\r\n",
                b"Authentication-Results:\r\n",
            ]
        ),
        max_size=8,
    ),
    peer=st.sampled_from(["127.0.0.1", "", "::1", "bogus"]),
)
def test_strip_leaves_at_most_one_trusted_header_and_everything_else(headers, peer):
    raw = b"".join(headers) + MAIL
    stripped = AUTH.strip(raw, peer)
    trusted = [
        f
        for f in fields(stripped.split(b"\r\n\r\n")[0] + b"\r\n")
        if field_name(f) == RESULTS and b"mx.example.com" in f.lower()
    ]
    assert len(trusted) <= 1
    assert stripped.endswith(MAIL.split(b"\r\n", 4)[-1])  # the body and the rest are untouched
    assert stripped.count(b"Received: from x") == raw.count(b"Received: from x")
