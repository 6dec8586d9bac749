"""Fixtures of the fault tests: the control server and a runtime of the test's own."""

from __future__ import annotations

import pytest
from faultctl import Control

from gateway.runtime import running


@pytest.fixture
async def control():
    async with Control(model_delay=0.02, tool_delay=0.02) as server:
        yield server


@pytest.fixture
async def rt(settings):
    """The test's own runtime on the children's Redis and prefix: to ingest and to read.

    One sender starts every thread here, so the per-sender rate limit is off.
    """
    async with running(settings.model_copy(update={"rate_limit": 0}), builtins=False) as rt:
        yield rt
