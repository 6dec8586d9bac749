"""Choices as buttons: one button per choice, a click by an allowed person answers, the message shows the pick."""

from __future__ import annotations

import json

from fake_slack import TEAM, mention, message
from helpers import eventually
from slack_app import slack_app

from channels.slack.interactive import MAX_BUTTONS, choice_blocks
from gateway.events import DoneForNow, RequestHumanInput, Thread

TS = "1710000000.000100"
THREAD = f"{TEAM}/C1/{TS}"


class ChoiceAgent:
    """Asks where to deploy, offering two choices, then says what it picked."""

    name = "chooser"
    description = "asks with choices"

    def tools(self) -> list:
        return []

    async def step(self, thread: Thread, event) -> Thread:
        if event is not None:
            thread = thread.with_events(event)
        last = thread.events[-1]
        if last.type == "user_message":
            return thread.with_events(RequestHumanInput(text="Deploy where?", choices=["staging", "production"]))
        if last.type == "human_response":
            return thread.with_events(DoneForNow(text=f"deploying to {last.text}"))
        return thread


def test_too_many_or_too_long_choices_stay_typed():
    assert choice_blocks("q", [str(i) for i in range(MAX_BUTTONS + 1)]) is None
    assert choice_blocks("q", ["x" * 2000]) is None
    [_, actions] = choice_blocks("q", ["a" * 100, "b"])
    first = actions["elements"][0]
    assert len(first["text"]["text"]) == 75 and json.loads(first["value"]) == {"choice": "a" * 100}


async def test_a_click_answers_with_its_choice_and_the_message_shows_who_picked(redis_url, prefix):
    async with slack_app(redis_url, prefix, ChoiceAgent()) as app:
        await app.event(mention("ship it", ts=TS), "Ev1")
        [question] = await eventually(lambda: [p for p in app.fake.posts() if p.get("blocks")])
        assert question["thread_ts"] == TS and "Reply with one of" in question["text"]  # the fallback text
        buttons = question["blocks"][1]["elements"]
        assert [b["text"]["text"] for b in buttons] == ["staging", "production"]
        await eventually(lambda: app.status(THREAD, "waiting_human"))
        question_ts = next(c.reply["ts"] for c in app.fake.calls if c.method == "chat.postMessage" and c.ok)
        where = dict(channel="C1", message_ts=question_ts, thread_ts=TS)

        # Someone the question is not for: told privately, the thread still waits.
        await app.click(
            user="U2", action_ts="1.1", action_id=buttons[1]["action_id"], value=buttons[1]["value"], **where
        )
        [refusal] = await eventually(lambda: app.fake.to("chat.postEphemeral"))
        assert refusal["user"] == "U2"
        assert (await app.thread(THREAD)).status == "waiting_human" and app.fake.to("chat.update") == []

        # The person who asked picks "production": the agent goes on with it, the message says so.
        await app.click(
            user="U1", action_ts="1.2", action_id=buttons[1]["action_id"], value=buttons[1]["value"], **where
        )
        await eventually(lambda: app.fake.posts(text="deploying to production"))
        [update] = await eventually(lambda: app.fake.to("chat.update"))
        assert update["ts"] == question_ts and update["channel"] == "C1"
        assert "→ production (chosen by <@U1> at " in update["text"]
        assert "actions" not in [b["type"] for b in update["blocks"]]  # the buttons are gone
        thread = await app.thread(THREAD)
        response = next(e for e in thread.events if e.type == "human_response")
        assert response.text == "production" and response.sender == "slack:U1"

        # The same click again (Slack resends nothing, but a person may double-click): nothing more.
        await app.click(
            user="U1", action_ts="1.2", action_id=buttons[1]["action_id"], value=buttons[1]["value"], **where
        )
        await eventually(lambda: app.status(THREAD, "done"))
        assert [e.type for e in (await app.thread(THREAD)).events].count("human_response") == 1


async def test_a_typed_choice_updates_nothing(redis_url, prefix):
    async with slack_app(redis_url, prefix, ChoiceAgent()) as app:
        await app.event(mention("ship it", ts=TS), "Ev1")
        await eventually(lambda: app.status(THREAD, "waiting_human"))
        await app.event(message("staging", ts="1710000010.000100", thread_ts=TS), "Ev2")
        await eventually(lambda: app.fake.posts(text="deploying to staging"))
        await eventually(lambda: app.status(THREAD, "done"))
        assert app.fake.to("chat.update") == []
