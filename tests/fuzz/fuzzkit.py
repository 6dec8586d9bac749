"""What the fuzz tests share: hypothesis settings, a hang bound, JSON-like values.

`bounded` is the hang bound: a parser stuck in a loop fails the example with
`Hang` after a generous number of seconds instead of stalling the suite. It
bounds a broken run; it does not measure speed (hypothesis' own deadline is off,
so a slow machine never fails a test).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# No example database: nothing is written into the tree, and each run explores afresh.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
SLOW_FUZZ = settings(FUZZ, max_examples=3000)
# Examples that go through the app (a runtime, Redis, HTTP): fewer, same rules.
FUZZ_IO = settings(FUZZ, max_examples=40)

HANG_SECONDS = 10.0


class Hang(AssertionError):
    """A parser took longer than the hang bound on one input."""


@contextlib.contextmanager
def bounded(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Fail with Hang if the block runs longer than `seconds` (main thread, sync code only)."""

    def expired(signum, frame):
        raise Hang(f"no result within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
# Any JSON document (bounded in size).
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=15,
)


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """`data` with each (position, length to cut, bytes to insert) applied in turn."""
    out = bytearray(data)
    for position, cut, insert in edits:
        at = position % (len(out) + 1)
        out[at : at + cut] = insert
    return bytes(out)


edits = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=1 << 20),
        st.integers(min_value=0, max_value=64),
        st.binary(max_size=24)
        | st.sampled_from(
            [
                b"\r\n",
                b"\n\n",
                b"--",
                b"=?utf-8?b?",
                b"?=",
                b"\r\n\r\n",
                b"boundary=",
                b"Content-Type: multipart/mixed; boundary=x\r\n",
                b"=\r\n",
                b"\x00",
                b"\xff\xfe",
            ]
        ),
    ),
    min_size=1,
    max_size=8,
)
