"""Approvals 2.0: a reason asked in a modal, every approver asked by DM with every copy settled,
and the App Home tab listing what waits on the person who opens it."""

from __future__ import annotations

import json

import pytest
from fake_slack import TEAM, Reply, home_opened, mention, message, submission
from helpers import eventually
from plugins import ApprovalAgent, EchoAgent
from slack_app import App, slack_app

from channels.slack.approvals import REASON

TS = "1710000000.000100"
THREAD = f"{TEAM}/C1/{TS}"


async def _asked(app: App) -> tuple[dict, str]:
    """The approval request in the thread: its Deny/Approve buttons by action id, and its ts."""
    await app.event(mention("1.2.3", ts=TS), "Ev1")
    await eventually(lambda: app.status(THREAD, "waiting_approval"))
    [request] = [m for m in app.fake.messages["C1"] if m.get("thread_ts") == TS]
    post = next(p for p in app.fake.posts() if p.get("blocks"))
    return {b["action_id"]: b for b in post["blocks"][1]["elements"]}, request["ts"]


def _click(buttons: dict, action_id: str, ts: str, user: str = "U1", **kw) -> dict:
    button = buttons[action_id]
    return dict(user=user, channel="C1", message_ts=ts, thread_ts=TS, value=button["value"], action_ts="1.1", **kw)


async def test_deny_opens_a_modal_and_its_reason_is_recorded_on_the_decision(redis_url, prefix):
    async with slack_app(redis_url, prefix, ApprovalAgent()) as app:
        buttons, ts = await _asked(app)
        before = await app.rt.redis.xlen(app.rt.keys.inbound(0))
        await app.click(**_click(buttons, "frontdesk_deny", ts, trigger_id="trig-1"))
        [opened] = app.fake.to("views.open")  # opened before the click was answered: within its 3 s
        assert opened["trigger_id"] == "trig-1" and opened["view"]["type"] == "modal"
        assert await app.rt.redis.xlen(app.rt.keys.inbound(0)) == before  # the click itself decides nothing
        view = next(iter(app.fake.views.values()))

        # Submitted without a reason: the modal says so and stays open; nothing is enqueued.
        r = await app.interaction(submission(view, user="U1"))
        assert r.status_code == 200 and r.json() == {"response_action": "errors", "errors": {REASON: "Please say why."}}
        assert await app.rt.redis.xlen(app.rt.keys.inbound(0)) == before

        values = {REASON: {REASON: {"type": "plain_text_input", "value": " not on a Friday "}}}
        r = await app.interaction(submission(view, user="U1", values=values))
        assert r.status_code == 200 and r.content == b""  # an empty answer closes the modal
        await eventually(lambda: app.status(THREAD, "done"))
        thread = await app.thread(THREAD)
        [decision] = [e for e in thread.events if e.type == "approval_decision"]
        assert (decision.approved, decision.comment, decision.by) == (False, "not on a Friday", "slack:U1")
        [update] = await eventually(lambda: app.fake.to("chat.update"))
        assert update["ts"] == ts and update["text"].startswith("Denied by <@U1>")
        assert "(not on a Friday)" in update["text"]

        # The same submission again (a double submit): one decision.
        await app.interaction(submission(view, user="U1", values=values))
        thread = await app.thread(THREAD)
        assert [e.type for e in thread.events].count("approval_decision") == 1


async def test_a_modal_that_cannot_open_decides_without_a_reason(redis_url, prefix):
    async with slack_app(redis_url, prefix, ApprovalAgent()) as app:
        buttons, ts = await _asked(app)
        await app.click(**_click(buttons, "frontdesk_deny", ts, trigger_id="expired"))
        await eventually(lambda: app.status(THREAD, "done"))
        [decision] = [e for e in (await app.thread(THREAD)).events if e.type == "approval_decision"]
        assert not decision.approved and decision.comment is None
        assert app.fake.to("views.open", ok=False)


@pytest.mark.parametrize("ask, opens", [("both", True), ("deny", False), ("none", False)])
async def test_approve_asks_for_a_reason_only_when_configured(redis_url, prefix, monkeypatch, ask, opens):
    monkeypatch.setenv("FRONTDESK_SLACK_ASK_REASON", ask)
    async with slack_app(redis_url, prefix, ApprovalAgent()) as app:
        buttons, ts = await _asked(app)
        await app.click(**_click(buttons, "frontdesk_approve", ts))
        if opens:
            [opened] = app.fake.to("views.open")
            assert opened["view"]["blocks"][1]["optional"] is True  # an approval may say why
            view = next(iter(app.fake.views.values()))
            await app.interaction(submission(view, user="U1"))
        await eventually(lambda: app.status(THREAD, "done"))
        assert bool(app.fake.to("views.open")) == opens


async def test_every_approver_gets_a_copy_and_every_copy_is_settled(redis_url, prefix, tmp_path):
    config = tmp_path / "frontdesk.toml"
    config.write_text('[agents.approver]\napprovers = ["slack:U1", "slack:U2", "slack:U3"]\n')
    async with slack_app(redis_url, prefix, ApprovalAgent(), config_path=config) as app:
        buttons, ts = await _asked(app)
        copies = await eventually(lambda: [app.fake.messages[d] for d in ("D2", "D3") if app.fake.messages[d]])
        assert len(copies) == 2 and all(len(c) == 1 for c in copies)
        assert [c["users"] for c in app.fake.to("conversations.open")] == ["U2", "U3"]
        copy_ts = app.fake.messages["D3"][0]["ts"]

        # U2 opens the Home tab: the request waits on them.
        await app.event(home_opened("U2"), "Ev2")
        home = await eventually(lambda: app.fake.homes.get("U2"))
        assert "Approval needed: deploy(version='1.2.3')" in json.dumps(home)

        # U3 approves from their DM copy; U2 has deleted theirs, which fails nothing.
        d2_ts = app.fake.messages["D2"][0]["ts"]
        app.fake.rule = lambda method, args: (
            Reply(body={"ok": False, "error": "message_not_found"})
            if method == "chat.update" and args.get("ts") == d2_ts
            else None
        )
        await app.click(
            user="U3",
            channel="D3",
            message_ts=copy_ts,
            thread_ts=None,
            value=buttons["frontdesk_approve"]["value"],
            action_ts="2.1",
        )
        await eventually(lambda: app.status(THREAD, "done"))
        [decision] = [e for e in (await app.thread(THREAD)).events if e.type == "approval_decision"]
        assert decision.by == "slack:U3" and decision.approved
        updates = await eventually(lambda: len(app.fake.to("chat.update", ok=None)) == 3 and app.fake.to("chat.update"))
        assert {(u["channel"], u["ts"]) for u in updates} == {("C1", ts), ("D3", copy_ts)}
        assert all(u["text"].startswith("Approved by <@U3>") for u in updates)
        deliveries = await eventually(lambda: _receipt_delivered(app))
        assert [d.status for d in deliveries] == ["sent"] * 3 and (await app.thread(THREAD)).status == "done"

        # Decided: U2's Home tab is empty again.
        await app.event(home_opened("U2"), "Ev3")
        await eventually(lambda: "Nothing waits on you." in json.dumps(app.fake.homes["U2"]))


async def _receipt_delivered(app: App):
    thread = await app.thread(THREAD)
    deliveries = [e for e in thread.events if e.type == "delivery"]
    return deliveries if len(deliveries) == 3 else None  # the request, the final answer, the receipt


async def test_a_home_tab_that_cannot_be_published_is_only_logged(redis_url, prefix):
    async with slack_app(redis_url, prefix, ApprovalAgent()) as app:
        app.fake.script("views.publish", Reply(status=429, body={"ok": False, "error": "ratelimited"}))
        await app.event(home_opened("U1"), "Ev9")  # answered 200 all the same
        await eventually(lambda: app.fake.to("views.publish", ok=False))
        assert app.fake.homes == {}


async def test_the_home_tab_lists_a_question_until_it_is_answered(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent()) as app:
        await app.event(mention("reset my password", ts=TS), "Ev1")
        await eventually(lambda: app.status(THREAD, "waiting_human"))
        await app.event(home_opened("U1"), "Ev2")
        home = await eventually(lambda: app.fake.homes.get("U1"))
        assert "you said 'reset my password'?" in json.dumps(home) and "a question for you" in json.dumps(home)
        await app.event(home_opened("U2"), "Ev3")  # someone else: not theirs
        await eventually(lambda: "Nothing waits on you." in json.dumps(app.fake.homes.get("U2")))

        await app.event(message("yes", ts="1710000050.000100", thread_ts=TS), "Ev4")
        await eventually(lambda: app.status(THREAD, "done"))
        await app.event(home_opened("U1"), "Ev5")
        await eventually(lambda: "Nothing waits on you." in json.dumps(app.fake.homes["U1"]))
