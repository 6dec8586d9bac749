"""gateway/retry.py: the one Retry-After parser (RFC 9110 §10.2.3)."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from gateway.retry import MAX_RETRY_AFTER, retry_after

NOW = 1_780_000_000.0  # a fixed clock: an HTTP-date is read against it


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(NOW + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(("value", "seconds"), [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5)])
def test_delta_seconds(value, seconds):
    assert retry_after(value, now=NOW) == seconds


def test_an_http_date_is_the_time_until_it():
    assert retry_after(http_date(90), now=NOW) == 90.0


@pytest.mark.parametrize(
    "value",
    [
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850, obsolete but to be accepted
        "Sun Nov  6 08:49:37 1994",  # asctime(): no zone, read as GMT
        "Sun, 06 Nov 1994 08:49:37 GMT",
    ],
)
def test_a_date_already_past_means_now(value):
    assert retry_after(value, now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf", "Tue, 99 Foo 2026 25:61:00 GMT", "1e999"])
def test_garbage_and_negatives_are_no_answer(value):
    assert retry_after(value, now=NOW) is None


def test_long_asks_are_cut_to_the_cap():
    assert retry_after("86400", now=NOW) == MAX_RETRY_AFTER
    assert retry_after(http_date(365 * 86400), now=NOW) == MAX_RETRY_AFTER
    assert retry_after("600", cap=60.0) == 60.0


def test_headers_of_any_case():
    # slack_sdk and twilio hand over plain dicts with the server's spelling; httpx ignores case.
    assert retry_after({"Retry-After": "7"}) == 7.0
    assert retry_after(httpx.Headers({"RETRY-AFTER": "7"})) == 7.0
    assert retry_after({"content-type": "text/plain"}) is None
    assert retry_after({}) is None


def test_the_millisecond_header_wins_and_garbage_in_it_falls_back():
    assert retry_after({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert retry_after({"retry-after-ms": "soon", "retry-after": "7"}) == 7.0
    # A date means nothing in milliseconds.
    assert retry_after({"retry-after-ms": http_date(90)}, now=NOW) is None
