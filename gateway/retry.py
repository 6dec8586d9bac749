"""How long to wait before trying again: what a refusing server asked for, and our own backoff.

One Retry-After parser for every client that meets a 429 or a 503 (the channels' providers and
the model vendors), and one backoff for everything that retries (the outbox, the model clients).
Pure functions, no I/O, so tests call them directly.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from datetime import UTC

# A server may ask for any wait; none we talk to means more than an hour, and a message parked
# for a day on one header (or a date a year ahead) would look lost. Longer asks are cut to this.
MAX_RETRY_AFTER = 3600.0

# OpenAI and Anthropic send a millisecond `retry-after-ms` beside the standard header; it is
# the finer of the two, so it wins when both are there.
_HEADERS = (("retry-after-ms", 1000.0), ("retry-after", 1.0))


def retry_after(
    source: Mapping[str, str] | str | None, *, cap: float = MAX_RETRY_AFTER, now: float | None = None
) -> float | None:
    """Seconds the server asked us to wait, from its headers or one Retry-After value; None if it did not say.

    Both forms of RFC 9110 §10.2.3: delta-seconds (`120`) and an HTTP-date; a date already past
    means "now" (0.0). A negative, infinite or unreadable value is no answer (None), so the
    caller's own backoff applies. The result is at most `cap`. `now` is for tests.
    """
    if source is None or isinstance(source, str):
        return _parse(source, 1.0, cap, now)
    for name, scale in _HEADERS:
        seconds = _parse(_header(source, name), scale, cap, now)
        if seconds is not None:
            return seconds
    return None


def backoff(
    attempt: int, base: float, cap: float, retry_after: float | None = None, *, rng: random.Random | None = None
) -> float:
    """Seconds before retry number `attempt + 1`: exponential with full jitter, never sooner than the server asked.

    Full jitter (a uniform draw up to `base * 2**attempt`, at most `cap`) spreads the retries of
    many senders refused at once, so they do not come back in step (the "Exponential Backoff
    And Jitter" comparison on the AWS Architecture Blog found it among the cheapest in total work).
    `rng` is for tests.
    """
    ceiling = min(cap, base * 2 ** min(attempt, 64))  # 2**64 s is beyond any cap; a float stays finite
    return max((rng or random).uniform(0, ceiling), retry_after or 0.0)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # httpx and aiohttp headers ignore case, but slack_sdk and twilio hand over plain dicts.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _parse(value: str | None, scale: float, cap: float, now: float | None) -> float | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value) / scale
    except ValueError:
        seconds = _until(value, now) if scale == 1.0 else math.nan  # dates only in the standard header
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


def _until(date: str, now: float | None) -> float:
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return math.nan
    if when.tzinfo is None:  # asctime() form: no zone, and RFC 9110 §5.6.7 says it is GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
