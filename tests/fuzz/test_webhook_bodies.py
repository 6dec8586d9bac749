"""Webhooks, fuzzed: the signature check round-trips and rejects any change; bodies parse or are Malformed.

verify(sign(x)) accepts for any id, time and body; changing any single byte of
the body, or the id, or moving the time out of the window, rejects. Any body
and any callback URL either reads or is refused with an InboundRejected.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from fuzzkit import FUZZ, FUZZ_IO, SLOW_FUZZ, bounded, json_values
from hypothesis import given
from hypothesis import strategies as st
from plugins import EchoAgent
from pydantic import SecretStr

from channels import webhook
from channels.webhook import check_callback, signature, verify
from gateway.errors import BadSignature, InboundRejected, Malformed, Replayed
from gateway.events import InboundMessage
from gateway.runtime import running
from gateway.web.app import create_app

secrets_ = st.binary(min_size=24, max_size=64).map(lambda b: "whsec_" + base64.b64encode(b).decode())
ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
bodies = st.text(max_size=300).map(str.encode) | json_values.map(lambda v: json.dumps(v).encode())
TOLERANCE = 300


def _headers(msg_id: str, stamp: int, sig: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": sig}


@FUZZ
@given(secret=secrets_, msg_id=ids, body=bodies, skew=st.integers(min_value=1 - TOLERANCE, max_value=TOLERANCE - 1))
def test_what_is_signed_verifies(secret, msg_id, body, skew):
    now = time.time()
    stamp = int(now) + skew
    headers = _headers(msg_id, stamp, signature(secret, msg_id, stamp, body))
    assert verify([secret], headers, body, TOLERANCE, now=now) == msg_id


@FUZZ
@given(
    secret=secrets_,
    msg_id=ids,
    body=bodies.filter(bool),
    where=st.integers(min_value=0),
    new=st.integers(min_value=0, max_value=255),
)
def test_any_single_byte_changed_is_rejected(secret, msg_id, body, where, new):
    _single_byte_changed(secret, msg_id, body, where, new)


def _single_byte_changed(secret: str, msg_id: str, body: bytes, where: int, new: int) -> None:
    stamp = int(time.time())
    headers = _headers(msg_id, stamp, signature(secret, msg_id, stamp, body))
    at = where % len(body)
    if body[at] == new:
        return
    changed = body[:at] + bytes([new]) + body[at + 1 :]
    with pytest.raises((BadSignature, Malformed)):  # Malformed: the change left the body not UTF-8
        verify([secret], headers, changed, TOLERANCE)


@FUZZ
@given(secret=secrets_, other=secrets_, msg_id=ids, other_id=ids, body=bodies)
def test_another_id_or_secret_or_an_old_time_is_rejected(secret, other, msg_id, other_id, body):
    stamp = int(time.time())
    sig = signature(secret, msg_id, stamp, body)
    if other_id != msg_id:
        with pytest.raises(BadSignature):
            verify([secret], _headers(other_id, stamp, sig), body, TOLERANCE)
    if other != secret:
        with pytest.raises(BadSignature):
            verify([other], _headers(msg_id, stamp, sig), body, TOLERANCE)
    old = stamp - TOLERANCE - 1
    with pytest.raises(Replayed):
        verify([secret], _headers(msg_id, old, signature(secret, msg_id, old, body)), body, TOLERANCE)
    # During a rotation either secret verifies; a list of signatures needs one good one.
    assert verify([other, secret], _headers(msg_id, stamp, f"v1,AAAA v1a,xyz {sig}"), body, TOLERANCE) == msg_id


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]), st.text(max_size=60), max_size=4
    ),
    body=st.binary(max_size=200),
)
def test_any_headers_are_rejected_not_an_error(headers, body):
    with bounded(), pytest.raises(InboundRejected):
        verify(["whsec_" + base64.b64encode(b"k" * 32).decode()], headers, body, TOLERANCE)


@FUZZ
@given(
    url=st.text(max_size=80)
    | st.sampled_from(
        [
            "http://[",
            "http://[::1",
            "http://h:port/",
            "http://h:99999/",
            "https://",
            "http://a b/",
            "http://[::ffff:10.0.0.1]/",
            "file:///etc/passwd",
            "gopher://x",
        ]
    )
    | st.builds(
        "{}://{}{}".format, st.sampled_from(["http", "https", "ftp", ""]), st.text(max_size=30), st.text(max_size=20)
    )
)
def test_any_callback_url_is_checked_or_malformed(settings, url):
    with bounded():
        try:
            assert check_callback(url, settings) == url
        except Malformed:
            pass


# ---------------------------------------------------------------- through the channel

SECRET = "whsec_" + base64.b64encode(b"fuzz-secret-fuzz-secret-32bytes!").decode()


@pytest.fixture
async def rt(settings):
    settings = settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    async with running(settings, builtins=False, agents=[EchoAgent()], channels=[webhook.channel]) as rt:
        yield rt


@FUZZ
@given(
    body=st.binary(max_size=400)
    | bodies
    | st.builds(
        lambda v: json.dumps({"text": "hi", **(v if isinstance(v, dict) else {"data": v})}).encode(), json_values
    )
)
async def test_any_body_parses_or_is_malformed(rt, body):
    with bounded():
        try:
            message = rt.channels["webhook"].parse("echo", "msg_1", body)
        except Malformed:
            return
    assert isinstance(message, InboundMessage) and message.conversation.startswith("echo/")


async def test_deeply_nested_data_is_malformed_or_read(rt):
    deep = b'{"text": "hi", "data": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with bounded():
        try:
            rt.channels["webhook"].parse("echo", "msg_deep", deep)
        except Malformed:
            pass


@FUZZ_IO
@given(body=st.binary(max_size=300) | bodies, msg_id=ids)
async def test_any_signed_body_is_answered_below_500(rt, body, msg_id):
    transport = httpx.ASGITransport(app=create_app(rt.settings, rt))
    stamp = int(time.time())
    try:
        headers = _headers(msg_id, stamp, signature(SECRET, msg_id, stamp, body))
    except UnicodeDecodeError:
        headers = _headers(msg_id, stamp, "v1,AAAA")
    async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk.test") as client:
        response = await client.post("/webhooks/echo", content=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text)


@pytest.mark.slow
@SLOW_FUZZ
@given(
    secret=secrets_,
    msg_id=ids,
    body=bodies.filter(bool),
    where=st.integers(min_value=0),
    new=st.integers(min_value=0, max_value=255),
)
def test_any_single_byte_changed_is_rejected_long(secret, msg_id, body, where, new):
    _single_byte_changed(secret, msg_id, body, where, new)
