"""gateway/retry.py: the one Retry-After parser (RFC 9110 §10.2.3) and the one backoff."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest

from gateway.retry import MAX_RETRY_AFTER, backoff, retry_after

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


def test_backoff_draws_up_to_the_doubling_ceiling_then_the_cap():
    rng = random.Random(16)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (9, 10.0), (5000, 10.0)]:
        delays = [backoff(attempt, 1.0, 10.0, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        # Full jitter: the draws spread over the whole range, not a band near its top.
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def test_backoff_is_the_seeded_draw():
    assert backoff(3, 0.5, 60.0, rng=random.Random(7)) == random.Random(7).uniform(0, 4.0)


def test_backoff_is_never_sooner_than_the_server_asked():
    rng = random.Random(16)
    assert all(backoff(0, 1.0, 10.0, 30.0, rng=rng) == 30.0 for _ in range(50))
    assert all(backoff(2, 1.0, 10.0, 0.5, rng=rng) >= 0.5 for _ in range(50))
    assert backoff(0, 1.0, 10.0, None, rng=random.Random(1)) == backoff(0, 1.0, 10.0, 0.0, rng=random.Random(1))
