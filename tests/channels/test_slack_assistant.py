"""Assistant threads and the thread status, end to end: signed events in, the worker, a fake Slack."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from fake_slack import (
    APP_TOKEN,
    TEAM,
    TOKEN,
    FakeSlack,
    Reply,
    assistant_thread,
    event_body,
    mention,
    message,
    rate_limited,
)
from helpers import eventually, make_settings
from plugins import EchoAgent, StepsAgent
from slack_live import live

import channels.slack as slack
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.events import DoneForNow, RequestHumanInput, Thread, ToolCall, ToolResult
from gateway.runtime import running

DM = "D1"
ROOT = "1720000000.000100"
CONVERSATION = f"{TEAM}/{DM}/{ROOT}"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "frontdesk.toml"
    path.write_text('[agents.steps]\nsuggested_prompts = ["steps=2", "What can you do?"]\n')
    return path


async def test_a_started_assistant_thread_gets_the_agents_suggested_prompts(redis_url, prefix, config):
    async with live(redis_url, prefix, StepsAgent(), config=config) as gw:
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        [prompts] = await eventually(lambda: gw.fake.to("assistant.threads.setSuggestedPrompts"))
        assert prompts["channel_id"] == DM and prompts["thread_ts"] == ROOT
        assert prompts["prompts"] == [
            {"title": "steps=2", "message": "steps=2"},
            {"title": "What can you do?", "message": "What can you do?"},
        ]
        assert await gw.rt.redis.xlen(gw.rt.keys.inbound(0)) == 0  # the event itself starts no thread


async def test_without_suggested_prompts_none_are_set(redis_url, prefix):
    async with live(redis_url, prefix, StepsAgent()) as gw:
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        await gw.event(message("steps=1", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        await eventually(lambda: gw.status_is(CONVERSATION, "done"))
        assert gw.fake.to("assistant.threads.setSuggestedPrompts", ok=None) == []


def test_more_than_four_suggested_prompts_stop_start_up_naming_the_key(tmp_path):
    path = tmp_path / "frontdesk.toml"
    path.write_text('[agents.helpdesk]\nsuggested_prompts = ["a", "b", "c", "d", "e"]\n')
    with pytest.raises(ConfigError, match="agents.helpdesk.suggested_prompts"):
        load_config(path)


async def test_each_assistant_thread_is_its_own_conversation_titled_by_its_first_message(redis_url, prefix):
    other = "1720000100.000100"
    async with live(redis_url, prefix, StepsAgent()) as gw:
        for n, root in enumerate((ROOT, other)):
            await gw.event(assistant_thread(thread_ts=root), f"Ev{n}")
            await gw.event(
                message(f"steps=1 thread {n}", ts=f"172000020{n}.000100", channel=DM, thread_ts=root), f"Em{n}"
            )
        first = await gw.thread(CONVERSATION)
        second = await gw.thread(f"{TEAM}/{DM}/{other}")
        assert first.id != second.id
        assert await gw.rt.ingest.thread_for("slack", f"{TEAM}/{DM}") is None  # not the DM as a whole
        await eventually(lambda: gw.status_is(CONVERSATION, "done"))
        titles = await eventually(
            lambda: len(gw.fake.to("assistant.threads.setTitle")) == 2 and gw.fake.to("assistant.threads.setTitle")
        )
        assert {(t["thread_ts"], t["title"]) for t in titles} == {
            (ROOT, "steps=1 thread 0"),
            (other, "steps=1 thread 1"),
        }
        [answer] = await eventually(lambda: gw.fake.posts(thread_ts=ROOT))
        assert answer["channel"] == DM and answer["text"] == "done after 1 steps"

        # A second message in the same thread continues it and does not title it again.
        await gw.event(message("and again", ts="1720000300.000100", channel=DM, thread_ts=ROOT), "Em9")
        await eventually(lambda: _said(gw, CONVERSATION, "and again"))
        assert len(gw.fake.to("assistant.threads.setTitle", ok=None)) == 2


async def test_the_context_the_person_is_looking_at_reaches_the_agent(redis_url, prefix):
    async with live(redis_url, prefix, EchoAgent()) as gw:
        await gw.event(assistant_thread(thread_ts=ROOT, context_channel="C1"), "Ev1")
        await gw.event(
            assistant_thread("assistant_thread_context_changed", thread_ts=ROOT, context_channel="C2"), "Ev2"
        )
        await gw.event(message("what is this channel?", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev3")
        thread = await eventually(lambda: gw.thread(CONVERSATION))
        first = thread.events[0]
        assert first.type == "user_message" and first.data["slack_context"]["channel_id"] == "C2"
        assert first.reply_to["assistant"] is True


async def test_a_plain_dm_thread_is_no_assistant_thread(redis_url, prefix):
    async with live(redis_url, prefix, EchoAgent()) as gw:
        await gw.event(message("hello", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev1")
        await eventually(lambda: gw.status_is(f"{TEAM}/{DM}", "waiting_human"))  # the DM as a whole, as before
        await eventually(lambda: gw.fake.posts(text="you said 'hello'?"))
        assert gw.fake.to("assistant.threads.setStatus", ok=None) == []
        assert gw.fake.to("assistant.threads.setTitle", ok=None) == []


# ---------------------------------------------------------------- status


class GatedAgent:
    """Runs `lookup` once, then ends as told; each turn waits for the test to open its gate."""

    name = "gated"
    description = "one tool, then an ending, at the test's pace"

    def __init__(self, ending: str = "done") -> None:
        self.ending = ending
        self.gate = asyncio.Semaphore(0)

    def tools(self) -> list:
        return []

    async def step(self, thread: Thread, event) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        await self.gate.acquire()
        if not any(isinstance(e, ToolCall) for e in thread.events):
            return thread.with_events(ToolCall(call_id="c1", tool="lookup"), ToolResult(call_id="c1", result=1))
        if self.ending == "fail":
            raise RuntimeError("the model fell over")
        if self.ending == "ask":
            return thread.with_events(RequestHumanInput(text="which one?"))
        return thread.with_events(DoneForNow(text="found it"))


async def _shown(gw, status: str, agent: GatedAgent) -> dict:
    """Wait until Slack shows `status` (while the turn is held), then let the turn go on."""
    call = await eventually(
        lambda: next((c for c in gw.fake.to("assistant.threads.setStatus") if c["status"] == status), None)
    )
    agent.gate.release()
    return call


@pytest.mark.parametrize("ending, status", [("done", "done"), ("ask", "waiting_human")])
async def test_the_status_names_what_the_turn_does_and_is_cleared_when_it_ends(redis_url, prefix, ending, status):
    agent = GatedAgent(ending)
    async with live(redis_url, prefix, agent) as gw:
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        await gw.event(message("find it", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        first = await _shown(gw, "is thinking…", agent)
        assert (
            first["channel_id"] == DM
            and first["thread_ts"] == ROOT
            and "Reading the thread…" in first["loading_messages"]
        )
        second = await _shown(gw, "is reading what lookup returned…", agent)
        assert "Ran lookup…" in second["loading_messages"] and len(second["loading_messages"]) <= 10
        await eventually(lambda: gw.status_is(CONVERSATION, status))
        await eventually(lambda: gw.statuses()[-1] == "")  # the composer is free again
        assert gw.statuses().count("") == 1  # not cleared between the two turns


async def test_the_status_is_cleared_when_the_step_fails(redis_url, prefix):
    agent = GatedAgent("fail")
    async with live(redis_url, prefix, agent, max_attempts=1) as gw:
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        await gw.event(message("find it", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        await _shown(gw, "is thinking…", agent)
        await _shown(gw, "is reading what lookup returned…", agent)
        await eventually(lambda: gw.rt.redis.xlen(gw.rt.keys.dlq(0)))  # the failed turn is dead-lettered
        await eventually(lambda: gw.statuses()[-1] == "")


async def test_a_rate_limited_clear_is_sent_again_after_retry_after(redis_url, prefix):
    async with live(redis_url, prefix, EchoAgent()) as gw:
        refusals = iter([rate_limited(0)])  # the first clear only

        def rule(method, args):
            return next(refusals, None) if method == "assistant.threads.setStatus" and args["status"] == "" else None

        gw.fake.rule = rule
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        await gw.event(message("hi", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        await eventually(lambda: gw.statuses() and gw.statuses()[-1] == "")  # accepted the second time
        refused = gw.fake.to("assistant.threads.setStatus", ok=False)
        assert [(c["status"], c.get("loading_messages")) for c in refused] == [("", None)]


async def test_agent_sessions_use_the_session_methods(redis_url, prefix, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_AGENT_SESSIONS", "true")
    agent = GatedAgent()
    async with live(redis_url, prefix, agent) as gw:
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        await gw.event(message("find it", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        [processing] = await eventually(lambda: gw.fake.to("agents.sessions.setStatus"))
        assert processing["status"] == "processing" and processing["channel_id"] == DM
        assert processing["thread_ts"] == ROOT
        [renamed] = await eventually(lambda: gw.fake.to("agents.sessions.rename"))  # the title is stored by now
        assert renamed["title"] == "find it"
        agent.gate.release()
        agent.gate.release()
        await eventually(lambda: gw.status_is(CONVERSATION, "done"))
        await eventually(lambda: gw.fake.to("agents.sessions.setStatus")[-1]["status"] == "active")
        # A session created by setStatus gets the title too, whichever call reached Slack first.
        assert any(c.get("title") == "find it" for c in gw.fake.to("agents.sessions.setStatus"))
        assert gw.fake.to("assistant.threads.setStatus", ok=None) == []
        assert gw.fake.to("assistant.threads.setTitle", ok=None) == []


async def _said(gw, conversation: str, text: str) -> bool:
    thread = await gw.thread(conversation)
    return any(getattr(e, "text", None) == text for e in thread.events)


def test_the_manifest_asks_for_what_assistant_threads_status_and_files_need():
    manifest = yaml.safe_load((Path(__file__).parents[2] / "deploy/slack/manifest.yaml").read_text())
    assert manifest["features"]["assistant_view"]["assistant_description"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"assistant:write", "files:read", "files:write", "chat:write", "im:history"} <= scopes
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"assistant_thread_started", "assistant_thread_context_changed", "message.im"} <= events


@pytest.mark.parametrize(
    "event",
    [
        {"type": "assistant_thread_started"},
        {"type": "assistant_thread_started", "assistant_thread": "D1"},
        {"type": "assistant_thread_started", "assistant_thread": {"channel_id": "D1"}},
        {"type": "assistant_thread_context_changed", "assistant_thread": {"channel_id": 5, "thread_ts": ROOT}},
    ],
)
async def test_an_odd_assistant_event_gets_200_and_changes_nothing(redis_url, prefix, config, event):
    async with live(redis_url, prefix, StepsAgent(), config=config) as gw:
        await gw.event(event, "Ev1")  # asserts the 200
        await gw.event(message("steps=1", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        await eventually(lambda: gw.status_is(f"{TEAM}/{DM}", "done"))  # an ordinary DM: no assistant thread known
        assert gw.fake.to("assistant.threads.setSuggestedPrompts", ok=None) == []


async def test_prompts_slack_refuses_leave_the_thread_working(redis_url, prefix, config):
    async with live(redis_url, prefix, StepsAgent(), config=config) as gw:
        gw.fake.script("assistant.threads.setSuggestedPrompts", Reply(body={"ok": False, "error": "missing_scope"}))
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        await eventually(lambda: gw.fake.to("assistant.threads.setSuggestedPrompts", ok=False))
        await gw.event(message("steps=1", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        await eventually(lambda: gw.status_is(CONVERSATION, "done"))


async def test_over_socket_mode_assistant_threads_work_the_same(redis_url, prefix, config):
    fake_settings = dict(slack_app_token=APP_TOKEN, slack_signing_secret=None, config_path=config)
    async with FakeSlack() as fake:
        settings = make_settings(
            redis_url, prefix, slack_bot_token=TOKEN, slack_api_url=fake.url, default_agent="steps", **fake_settings
        )
        async with running(settings, agents=[StepsAgent()], builtins=False, channels=[slack.channel]) as rt:
            stop = asyncio.Event()
            serving = asyncio.create_task(rt.channels["slack"].serve(stop))
            try:
                await eventually(lambda: fake.to("apps.connections.open"))
                started = await fake.send_envelope(event_body(assistant_thread(thread_ts=ROOT), "EvA"))
                await eventually(lambda: any(a.get("envelope_id") == started for a in fake.socket_acks))
                said = await fake.send_envelope(
                    event_body(message("steps=1", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "EvB")
                )
                await eventually(lambda: any(a.get("envelope_id") == said for a in fake.socket_acks))
            finally:
                stop.set()
                await asyncio.wait_for(serving, timeout=15)
            assert await rt.ingest.thread_for("slack", CONVERSATION)
            await eventually(lambda: fake.to("assistant.threads.setSuggestedPrompts"))


async def test_with_status_all_a_channel_thread_shows_it_too(redis_url, prefix, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_STATUS", "all")
    agent = GatedAgent()
    async with live(redis_url, prefix, agent) as gw:
        await gw.event(mention("find it", ts="1720000001.000100"), "Ev1")
        first = await _shown(gw, "is thinking…", agent)
        assert first["channel_id"] == "C1" and first["thread_ts"] == "1720000001.000100"
        agent.gate.release()
        await eventually(lambda: gw.status_is(f"{TEAM}/C1/1720000001.000100", "done"))
        await eventually(lambda: gw.statuses()[-1] == "")


async def test_status_off_sets_none(redis_url, prefix, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_STATUS", "off")
    async with live(redis_url, prefix, StepsAgent()) as gw:
        await gw.event(assistant_thread(thread_ts=ROOT), "Ev1")
        await gw.event(message("steps=1", ts="1720000001.000100", channel=DM, thread_ts=ROOT), "Ev2")
        await eventually(lambda: gw.status_is(CONVERSATION, "done"))
        await eventually(lambda: gw.fake.posts(thread_ts=ROOT))
        assert gw.fake.to("assistant.threads.setStatus", ok=None) == []
