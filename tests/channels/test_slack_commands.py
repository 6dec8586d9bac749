"""Entry points: the `/frontdesk <agent> <text>` slash command and the "Send to agent" message shortcut."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from fake_slack import APP_TOKEN, TEAM, TOKEN, FakeSlack, Reply, command, message, shortcut
from helpers import eventually, make_settings
from plugins import ApprovalAgent, EchoAgent
from slack_app import slack_app

import channels.slack as slack
from channels.slack.commands import USAGE, parse_command
from gateway.runtime import running


def test_the_first_word_names_an_agent_only_when_it_is_one():
    assert parse_command("echo reset my password", ["echo"]) == ("echo", "reset my password")
    assert parse_command("Echo  hi ", ["echo"]) == ("echo", "hi")
    assert parse_command("reset my password", ["echo"]) == (None, "reset my password")
    assert parse_command("   ", ["echo"]) == (None, "")


async def test_a_command_starts_a_thread_under_a_root_post_and_answers_privately(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent(), ApprovalAgent()) as app:
        r = await app.signed_post(
            "/slack/events", command("approver 1.2.3 <!channel>"), "application/x-www-form-urlencoded"
        )
        assert r.status_code == 200
        assert r.json() == {"response_type": "ephemeral", "text": "Started *approver* in the thread."}
        [root] = app.fake.messages["C1"][:1]
        assert root["text"] == "<@U1> asked *approver*: 1.2.3 &lt;!channel&gt;"  # no @channel ping from a request
        thread = await app.thread(f"{TEAM}/C1/{root['ts']}")
        assert thread.agent == "approver" and thread.origin.address == "U1"
        assert thread.events[0].text == "1.2.3 <!channel>"
        await eventually(lambda: [p for p in app.fake.posts(thread_ts=root["ts"]) if p.get("blocks")])


async def test_a_command_without_an_agent_goes_to_the_channels_agent_and_is_answered_in_its_thread(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent()) as app:
        r = await app.signed_post("/slack/events", command("reset my password"), "application/x-www-form-urlencoded")
        assert r.json()["text"] == "Started *echo* in the thread."
        root = app.fake.messages["C1"][0]
        [question] = await eventually(lambda: app.fake.posts(text="you said 'reset my password'?"))
        assert question["thread_ts"] == root["ts"]
        await app.event(message("yes", ts="1800000000.000200", thread_ts=root["ts"]), "Ev1")
        await eventually(lambda: app.fake.posts(text="ok: yes", thread_ts=root["ts"]))


async def test_a_command_with_nothing_to_do_or_nowhere_to_post_says_so_and_starts_nothing(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent()) as app:
        r = await app.signed_post("/slack/events", command("  "), "application/x-www-form-urlencoded")
        assert r.json() == {"response_type": "ephemeral", "text": USAGE}
        app.fake.script("chat.postMessage", Reply(body={"ok": False, "error": "not_in_channel"}))
        r = await app.signed_post("/slack/events", command("hello", channel="C9"), "application/x-www-form-urlencoded")
        assert r.status_code == 200 and "/invite @frontdesk" in r.json()["text"]
        assert await app.rt.redis.xlen(app.rt.keys.inbound(0)) == 0


async def test_an_unsigned_command_is_refused(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent()) as app:
        raw = command("echo hi")
        r = await app.http.post(
            "/slack/events", content=raw, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 401 and app.fake.to("chat.postMessage") == []


async def test_send_to_agent_starts_a_thread_on_that_message(redis_url, prefix):
    async with slack_app(redis_url, prefix, EchoAgent()) as app:
        ts = "1800000000.000100"
        payload = shortcut(user="U1", channel="C1", ts=ts, text="the build is red", author="U2")
        r = await app.interaction(payload)
        assert r.status_code == 200
        thread = await app.thread(f"{TEAM}/C1/{ts}")
        assert thread.events[0].text == "<@U2> wrote: the build is red" and thread.events[0].sender == "slack:U1"
        [question] = await eventually(lambda: app.fake.posts(text="you said '<@U2> wrote: the build is red'?"))
        assert question["thread_ts"] == ts
        await eventually(lambda: app.fake.to("reactions.add"))  # the message got the usual acknowledgement

        # Chosen twice (the same action): one thread, one message.
        await app.interaction(payload)
        thread = await app.thread(f"{TEAM}/C1/{ts}")
        assert [e.type for e in thread.events].count("user_message") == 1


def test_the_manifest_has_the_command_the_shortcut_the_home_tab_and_the_install():
    from pathlib import Path

    import yaml

    from channels.slack.commands import SEND_SHORTCUT
    from channels.slack.settings import SlackAgentSettings

    manifest = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/slack/manifest.yaml").read_text())
    features, settings = manifest["features"], manifest["settings"]
    [cmd] = features["slash_commands"]
    assert cmd["command"] == "/frontdesk" and cmd["url"] == settings["event_subscriptions"]["request_url"]
    assert [(s["type"], s["callback_id"]) for s in features["shortcuts"]] == [("message", SEND_SHORTCUT)]
    assert features["app_home"]["home_tab_enabled"] is True
    assert {"app_home_opened", "app_uninstalled", "tokens_revoked"} <= set(
        settings["event_subscriptions"]["bot_events"]
    )
    assert [u.rsplit("/", 2)[-2:] for u in manifest["oauth_config"]["redirect_urls"]] == [["slack", "oauth_redirect"]]
    # An OAuth install asks for exactly what the manifest lists.
    assert set(SlackAgentSettings.model_fields["scopes"].default.split(",")) == set(
        manifest["oauth_config"]["scopes"]["bot"]
    )


async def test_over_socket_mode_the_command_and_the_shortcut_work_the_same(redis_url, prefix):
    async with FakeSlack() as fake:
        # Socket Mode alone: no signing secret, so no HTTP route either.
        values = dict(slack_bot_token=TOKEN, slack_app_token=APP_TOKEN, slack_api_url=fake.url, default_agent="echo")
        settings = make_settings(redis_url, prefix, **values)
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack.channel]) as rt:
            stop = asyncio.Event()
            serving = asyncio.create_task(rt.channels["slack"].serve(stop))
            try:
                await eventually(lambda: fake.to("apps.connections.open"))
                sent = await fake.send_envelope(dict(parse_qsl(command("echo over the socket"))), kind="slash_commands")
                ack = await eventually(
                    lambda: next((a for a in fake.socket_acks if a.get("envelope_id") == sent), None)
                )
                assert ack["payload"] == {"response_type": "ephemeral", "text": "Started *echo* in the thread."}
                shortcut_envelope = await fake.send_envelope(
                    shortcut(user="U1", channel="C1", ts="1800000001.000100", text="look", author="U1"),
                    kind="interactive",
                )
                await eventually(lambda: any(a.get("envelope_id") == shortcut_envelope for a in fake.socket_acks))
            finally:
                stop.set()
                await asyncio.wait_for(serving, timeout=15)
            root = fake.messages["C1"][0]
            assert await rt.ingest.thread_for("slack", f"{TEAM}/C1/{root['ts']}")
            assert await rt.ingest.thread_for("slack", f"{TEAM}/C1/1800000001.000100")
