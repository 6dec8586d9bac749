"""Cron triggers: each tick starts one thread however many schedulers run."""

from __future__ import annotations

import asyncio

import pytest
from helpers import background, eventually
from plugins import EchoAgent

from channels import webhook
from gateway.cron import Cron, due_tick
from gateway.errors import ConfigError
from gateway.runtime import running


def test_due_tick_fires_the_latest_and_counts_what_it_skipped():
    assert due_tick("*/5 * * * *", 0, 299) == (None, 0)  # next tick is at 300
    assert due_tick("*/5 * * * *", 0, 300) == (300.0, 0)
    assert due_tick("*/5 * * * *", 0, 1000) == (900.0, 2)  # 300 and 600 coalesce into 900


async def test_each_tick_fires_once_with_two_schedulers(settings, tmp_path):
    config = tmp_path / "frontdesk.toml"
    config.write_text('[[cron]]\nname = "every-second"\nschedule = "* * * * * *"\nagent = "echo"\ntext = "tick"\n')
    settings = settings.model_copy(update={"config_path": config, "cron_grace": 0})
    async with running(settings, builtins=False, agents=[EchoAgent()]) as rt:
        a, b = Cron(rt), Cron(rt)
        async with background(a, b):
            await eventually(lambda: a.fired + b.fired >= 3)
            await asyncio.sleep(0.2)
        threads = await rt.store.list(limit=100)
    assert len(threads) == a.fired + b.fired
    assert all(t["agent"] == "echo" and t["channel"] == "cron" for t in threads)
    assert len({t["id"] for t in threads}) == len(threads)


async def test_a_recently_missed_tick_fires_on_start_and_an_old_one_does_not(settings, tmp_path):
    config = tmp_path / "frontdesk.toml"
    # Every hour on the hour: with a grace of two hours, the last tick is always recent enough.
    config.write_text('[[cron]]\nname = "hourly"\nschedule = "0 * * * *"\nagent = "echo"\ntext = "hourly"\n')
    recent = settings.model_copy(update={"config_path": config, "cron_grace": 7200})
    async with running(recent, builtins=False, agents=[EchoAgent()]) as rt:
        cron = Cron(rt)
        async with background(cron):
            await eventually(lambda: cron.fired == 1)
    stale = settings.model_copy(update={"config_path": config, "cron_grace": 0})
    async with running(stale, builtins=False, agents=[EchoAgent()]) as rt:
        cron = Cron(rt)
        async with background(cron):
            await asyncio.sleep(0.3)
        assert cron.fired == 0


async def test_a_job_whose_contact_cannot_be_reached_stops_start_up_naming_the_key(settings, tmp_path):
    config = tmp_path / "frontdesk.toml"
    config.write_text(
        '[[cron]]\nschedule = "0 * * * *"\nagent = "echo"\ntext = "report"\ncontact = "webhook:https://example.com/cb"\n'
    )
    settings = settings.model_copy(update={"config_path": config, "webhook_secret": None, "webhook_secrets": {}})
    async with running(settings, builtins=False, agents=[EchoAgent()], channels=[webhook.channel]) as rt:
        with pytest.raises(ConfigError, match=r"cron\.0\.contact: .*FRONTDESK_WEBHOOK_SECRET_ECHO"):
            Cron(rt)
        assert await rt.store.list(limit=10) == []
