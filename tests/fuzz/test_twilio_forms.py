"""Twilio forms and SMS text, fuzzed.

The form readers take whatever fields a signed request carries: they return a
message (or None), or refuse with Malformed — nothing else. The text side keeps
its promises for any text: markdown stripping terminates, segments fit the
limit, are numbered in order, and join back to the text (only the whitespace
at a cut is dropped).
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from fuzzkit import FUZZ, FUZZ_IO, SLOW_FUZZ, bounded
from helpers import make_settings
from hypothesis import given
from hypothesis import strategies as st
from plugins import EchoAgent
from starlette.datastructures import ImmutableMultiDict

import channels.sms as sms
import channels.whatsapp as whatsapp
from channels.twilio.text import MAX_BODY, segments, units
from channels.twilio.webhook import to_delivery, to_inbound
from channels.whatsapp.channel import to_whatsapp
from gateway.errors import InboundRejected
from gateway.events import DeliveryEvent, InboundMessage
from gateway.markdown import to_text
from gateway.runtime import running
from gateway.web.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))
from fake_twilio import ACCOUNT_SID, AUTH_TOKEN, sign

FIELDS = [
    "MessageSid",
    "SmsSid",
    "From",
    "To",
    "Body",
    "NumMedia",
    "MediaUrl0",
    "MediaContentType0",
    "MediaUrl1",
    "MessageStatus",
    "SmsStatus",
    "ErrorCode",
    "AccountSid",
    "ProfileName",
    "ButtonText",
]
values = st.text(max_size=40) | st.sampled_from(
    [
        "",
        "0",
        "1",
        "10",
        "11",
        "-3",
        "1e3",
        "٣",
        " 2 ",
        "99999999999999999999",
        "delivered",
        "FAILED",
        "undelivered",
        "+15551230001",
        "whatsapp:+15551230001",
        "whatsapp:",
        "63016",
        "SM123",
    ]
)
pairs_of_any = st.lists(st.tuples(st.sampled_from(FIELDS) | st.text(max_size=10), values), max_size=14)
# A real incoming SMS with fields added, repeated or overridden.
REAL = [
    ("MessageSid", "SMfuzz"),
    ("AccountSid", "AC1"),
    ("From", "+15551230001"),
    ("To", "+15559870000"),
    ("Body", "hello"),
    ("NumMedia", "0"),
]
forms = pairs_of_any | st.builds(
    lambda extra, keep: [p for p in REAL if p[0] in keep] + extra,
    pairs_of_any,
    st.sets(st.sampled_from([k for k, _ in REAL])) | st.just({k for k, _ in REAL}),
)


@FUZZ
@given(pairs=forms)
def test_any_form_is_a_message_or_malformed(pairs):
    form = ImmutableMultiDict(pairs)
    with bounded():
        try:
            message = to_inbound(form)
        except InboundRejected:
            pass
        else:
            assert isinstance(message, InboundMessage) and len(message.attachments) <= 10
        try:
            message = to_whatsapp(form)
        except InboundRejected:
            pass
        else:
            assert message.channel == "whatsapp" and len(message.attachments) <= 10
        event = to_delivery(form, "th_x-3")
    assert event is None or isinstance(event, DeliveryEvent)


# Markdown's own tokens, joined at random: the patterns' edge cases, not just letters.
markdownish = st.lists(
    st.sampled_from(
        [
            "a",
            "b",
            " ",
            "\n",
            "\t",
            "*",
            "_",
            "~",
            "`",
            "#",
            ">",
            "[",
            "]",
            "(",
            ")",
            "!",
            "-",
            "```",
            "**",
            "__",
            "https://x.test",
            "\r\n",
            "😀",
            "é",
        ]
    ),
    max_size=200,
).map("".join) | st.text(max_size=300)


@FUZZ
@given(text=markdownish)
def test_plain_text_terminates_on_any_markdown(text):
    with bounded():
        out = to_text(text)
    assert isinstance(out, str)


def _without_prefix(segment: str, index: int, total: int) -> str:
    prefix = f"({index}/{total}) "
    assert segment.startswith(prefix), (segment[:20], prefix)
    return segment[len(prefix) :]


def _visible(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace())


@FUZZ
@given(
    text=st.text(max_size=4000)
    | st.text(alphabet=st.sampled_from(["a", " ", "\n", "😀", "é", "字"]), min_size=1500, max_size=6000),
    limit=st.integers(min_value=40, max_value=MAX_BODY),
)
def test_segments_fit_are_numbered_and_join_back(text, limit):
    with bounded():
        parts = segments(text, limit)
    assert all(units(p) <= limit for p in parts)
    if units(text) <= limit:
        assert parts == [text]
        return
    bodies = [_without_prefix(p, i, len(parts)) for i, p in enumerate(parts, 1)]
    # Only whitespace is dropped at a cut; every other character comes back, in order.
    assert _visible("".join(bodies)) == _visible(text)
    assert all(b == b.strip() and b for b in bodies)


@pytest.mark.slow
@SLOW_FUZZ
@given(text=st.text(max_size=20000), limit=st.integers(min_value=40, max_value=MAX_BODY))
def test_segments_join_back_long(text, limit):
    with bounded():
        parts = segments(text, limit)
    assert all(units(p) <= limit for p in parts)
    if len(parts) > 1:
        bodies = [_without_prefix(p, i, len(parts)) for i, p in enumerate(parts, 1)]
        assert _visible("".join(bodies)) == _visible(text)


# ---------------------------------------------------------------- through the app

BASE = "http://frontdesk.test"


@pytest.fixture
async def http(redis_url, prefix):
    settings = make_settings(
        redis_url,
        prefix,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url="http://127.0.0.1:9",
        default_agent="echo",
    )
    channels = [sms.channel, whatsapp.channel]  # one webhook: either may take a form
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=channels) as rt:
        transport = httpx.ASGITransport(app=create_app(settings, rt))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


@FUZZ_IO
@given(
    pairs=forms,
    path=st.sampled_from(["/twilio/sms", "/twilio/sms", "/twilio/status", "/twilio/status?t=th_x&o=th_x-1"]),
)
async def test_any_signed_form_is_answered_below_500(http, pairs, path):
    body = urlencode(pairs)
    # RequestValidator signs every value of a repeated field; compute_signature takes a multi-dict the same way.
    signature = sign(BASE + path, ImmutableMultiDict(pairs))
    response = await http.post(
        path,
        content=body,
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code < 500, (response.status_code, response.text)


@FUZZ_IO
@given(raw=st.binary(max_size=300), signature=st.sampled_from(["", "abc", "AAAA"]))
async def test_any_unsigned_body_is_refused(http, raw, signature):
    response = await http.post(
        "/twilio/sms",
        content=raw,
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code in (400, 403), (response.status_code, response.text)
