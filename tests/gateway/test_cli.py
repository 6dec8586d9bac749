"""The `frontdesk` command: errors a person can fix, and the one-shot commands' output.

Most tests call the typer app in-process (typer's CliRunner) against the test's
Redis and prefix; the start-up of a long-running command is checked in a real
subprocess, which is what a deployment runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from helpers import plain_tracebacks
from plugins import EchoAgent, SinkChannel, StepsAgent
from servers import LoopbackServer
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from gateway.cli import app
from gateway.events import Contact, RequestHumanInput
from gateway.launch import launch_thread
from gateway.runtime import running
from gateway.store.deadletters import DeadLetters
from gateway.store.entries import stream_order
from gateway.web.dashboard.sessions import DashboardSessions, ref_of

FRONTDESK = str(Path(sys.executable).with_name("frontdesk"))
REPO = Path(__file__).resolve().parents[2]
_OWN_PREFIXES = ("FRONTDESK_", "TEST_")
ROW_KEYS = {"id", "status", "agent", "channel", "person", "created_at", "updated_at", "updated_ms", "events"}


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI configures logging for its process; put the test process's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    # Back to the suite's logging, not structlog's defaults: their rich tracebacks are what
    # made later tests' steps outlive their lease (tests/conftest.py).
    plain_tracebacks()


@pytest.fixture
def env(settings, tmp_path, monkeypatch) -> dict[str, str]:
    """The variables a command sees: the test's Redis and prefix, the test plugins."""
    monkeypatch.chdir(tmp_path)  # no .env or frontdesk.toml of the repository's
    for name in os.environ:
        if name.startswith(_OWN_PREFIXES):
            monkeypatch.delenv(name)
    return {
        "FRONTDESK_REDIS_URL": settings.redis_url,
        "FRONTDESK_KEY_PREFIX": settings.key_prefix,
        "FRONTDESK_AGENTS": "plugins:agents",
        "FRONTDESK_CHANNELS": "plugins:channels",
        "TEST_SINK_URL": "http://127.0.0.1:9/unused",
    }


def invoke(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


# ---------------------------------------------------------------- errors a person fixes


@pytest.mark.parametrize(
    "toml, key",
    [
        ("[agents.echo]\nroutez = {}\n", "agents.echo.routez"),  # unknown key
        ('[agents.echo]\nresponders = "slack:U1"\n', "agents.echo.responders"),  # wrong type
        ('[agents.echo]\nresponders = ["nobody"]\n', "agents.echo.responders"),  # not channel:address
        ("[agents.nosuch]\n", "agents.nosuch"),  # an agent that does not exist
        ('[[cron]]\nschedule = "0 9 * * *"\nagent = "ghost"\ntext = "hi"\n', "cron.0.agent"),
    ],
)
def test_a_bad_frontdesk_toml_names_the_key_and_exits_2(env, tmp_path, toml, key):
    (tmp_path / "bad.toml").write_text(toml)
    result = invoke({**env, "FRONTDESK_CONFIG": str(tmp_path / "bad.toml")}, "check")
    assert result.exit_code == 2, result.output
    assert key in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name, value",
    [
        ("FRONTDESK_PARTITIONS", "0"),
        ("FRONTDESK_HTTP_PORT", "eighty"),
        ("FRONTDESK_LOG_FORMAT", "xml"),
        ("FRONTDESK_LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_setting_names_the_variable_and_exits_2(env, name, value):
    result = invoke({**env, name: value}, "threads", "list")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("frontdesk: error: ") and name in result.stderr
    assert "Traceback" not in result.output


def test_check_describes_a_good_configuration(env):
    result = invoke({**env, "FRONTDESK_MODEL": "demo"}, "check")
    assert result.exit_code == 0, result.output
    assert "echo" in result.stdout and "test" in result.stdout and "scripted demo model" in result.stdout


def test_a_worker_with_a_bad_config_refuses_to_start(env, tmp_path):
    """The real start-up path, as a deployment runs it: one line, exit 2, nothing left running."""
    (tmp_path / "bad.toml").write_text("[agents.echo]\nroutez = {}\n")
    child = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    child.update(env, FRONTDESK_CONFIG=str(tmp_path / "bad.toml"))
    child["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    done = subprocess.run([FRONTDESK, "worker"], env=child, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "agents.echo.routez" in done.stderr and "Traceback" not in done.stderr


def test_an_http_port_in_use_is_named_and_exits_2(env, tmp_path):
    child = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    child.update(env, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        child["FRONTDESK_HTTP_PORT"] = str(taken.getsockname()[1])
        done = subprocess.run([FRONTDESK, "serve"], env=child, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "FRONTDESK_HTTP_PORT" in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_a_listener_for_a_channel_that_is_not_configured_exits_2(env):
    result = invoke(env, "listen", "carrier-pigeon")
    assert result.exit_code == 2
    assert "carrier-pigeon" in result.stderr and "not configured" in result.stderr


# ---------------------------------------------------------------- threads


async def _make_threads(settings) -> list[str]:
    async with running(
        settings, agents=[EchoAgent(), StepsAgent()], channels=[SinkChannel("http://127.0.0.1:9/")], builtins=False
    ) as rt:
        ids = []
        for agent, text in (("echo", "first"), ("steps", "second"), ("echo", "third")):
            ids.append((await launch_thread(rt, agent, text, None)).id)
        # The third one asked a question: its status changes, like a worker's step would.
        thread = await rt.store.load(ids[2])
        await rt.store.acquire(thread.id, "t", 5000)
        asked = thread.with_events(RequestHumanInput(text="which one?", choices=["a", "b"]))
        await rt.store.save(asked, asked.events[-1:], owner="t", entry=None)
        return ids


def test_threads_list_prints_one_line_per_thread(env, settings):
    ids = asyncio.run(_make_threads(settings))
    result = invoke(env, "threads", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == ids[::-1]  # newest update first
    assert all(set(r) == ROW_KEYS for r in rows)
    assert rows[0]["status"] == "waiting_human" and rows[0]["agent"] == "echo" and rows[0]["channel"] == "api"
    assert rows[0]["events"] == 2 and rows[1]["status"] == "running"

    waiting = invoke(env, "threads", "list", "--json", "--status", "waiting_human")
    assert [json.loads(line)["id"] for line in waiting.stdout.splitlines()] == [ids[2]]
    limited = invoke(env, "threads", "list", "--limit", "2")
    lines = limited.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:4] == [ids[2], "waiting_human", "echo", "api"]
    assert invoke(env, "threads", "list", "--status", "asleep").exit_code == 2


def test_threads_show_prints_the_events(env, settings):
    ids = asyncio.run(_make_threads(settings))
    result = invoke(env, "threads", "show", ids[2])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{ids[2]}  waiting_human")
    assert "user_message" in lines[2] and "third" in lines[2]
    assert "request_human_input" in lines[3] and "choices: a, b" in lines[3]
    as_json = json.loads(invoke(env, "threads", "show", ids[2], "--json").stdout)
    assert as_json["id"] == ids[2] and as_json["status"] == "waiting_human"
    assert [e["type"] for e in as_json["events"]] == ["user_message", "request_human_input"]
    missing = invoke(env, "threads", "show", "th_nosuch")
    assert missing.exit_code == 1 and "no thread" in missing.stderr


# ---------------------------------------------------------------- launch and dead letters


def test_launch_prints_the_new_thread_id(env, settings):
    result = invoke(env, "launch", "echo", "check the backups", "--contact", "test:alice")
    assert result.exit_code == 0, result.output
    tid = result.stdout.strip()
    assert tid.startswith("th_") and len(result.stdout.splitlines()) == 1

    async def stored():
        async with running(settings, builtins=False) as rt:
            return await rt.store.load(tid)

    thread = asyncio.run(stored())
    assert thread.agent == "echo" and thread.origin == Contact(channel="test", address="alice")
    assert thread.events[0].text == "check the backups" and thread.events[0].sender == "cli"
    assert thread.status == "running"  # its first turn is queued for a worker


@pytest.mark.parametrize(
    "args, message",
    [
        (("launch", "nosuch", "hi"), "no agent named 'nosuch'"),
        (("launch", "echo", "hi", "--contact", "pigeon:coo"), "not configured"),
        (("launch", "echo", "hi", "--contact", "alice"), "channel:address"),
        # A channel that cannot reach the contact: the API's 422 message, word for word.
        (("launch", "echo", "hi", "--contact", "slack:U1"), "channel 'slack' is not configured: SLACK_BOT_TOKEN"),
        (("launch", "echo", "hi", "--contact", "webhook:https://example.com/cb"), "FRONTDESK_WEBHOOK_SECRET_ECHO"),
    ],
)
def test_launch_refuses_what_cannot_run(env, args, message):
    result = invoke(env, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_dlq_commands_without_dead_letters(env, settings):
    listed = invoke(env, "dlq", "list", "--json")
    assert listed.exit_code == 0 and listed.stdout == ""
    assert invoke(env, "dlq", "replay", "0:1-1").exit_code == 1
    assert invoke(env, "dlq", "replay", "not-an-id").exit_code == 2
    assert invoke(env, "dlq", "replay").exit_code == 2
    replayed = invoke(env, "dlq", "replay", "--all")
    assert replayed.exit_code == 0 and "replayed 0" in replayed.stdout


def test_dlq_list_names_the_partition_entry_thread_and_reason(env, settings):
    async def dead_letter() -> str:
        async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
            thread = await launch_thread(rt, "echo", "hi", None)
            stream = rt.keys.inbound(0)
            await rt.streams.ensure_group(stream, "workers")
            entry_id, fields = (await rt.redis.xreadgroup("workers", "t", {stream: ">"}, count=1))[0][1][0]
            await rt.streams.dead_letter(0, stream, "workers", entry_id, fields, "RuntimeError: agent bug")
            return thread.id

    tid = asyncio.run(dead_letter())
    result = invoke(env, "dlq", "list", "--json")
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["id"].startswith("0:") and row["failed_at"] > 0
    assert (row["source"], row["kind"], row["thread_id"], row["reason"]) == (
        "inbound",
        "continue",
        tid,
        "RuntimeError: agent bug",
    )
    assert invoke(env, "dlq", "list").stdout.split()[:3] == [row["id"], "inbound", tid]
    assert invoke(env, "dlq", "replay", row["id"]).exit_code == 0
    assert invoke(env, "dlq", "list").stdout == ""


def test_dlq_list_rows_are_the_apis_rows_newest_first(env, settings):
    async def two_dead_letters():
        async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
            for text in ("first", "second"):
                await launch_thread(rt, "echo", text, None)
            stream = rt.keys.inbound(0)
            await rt.streams.ensure_group(stream, "workers")
            for entry_id, fields in (await rt.redis.xreadgroup("workers", "t", {stream: ">"}, count=2))[0][1]:
                await rt.streams.dead_letter(0, stream, "workers", entry_id, fields, "RuntimeError: agent bug")
            return [d.public() for d in await DeadLetters.of(rt).newest()]

    from_api = asyncio.run(two_dead_letters())
    rows = [json.loads(line) for line in invoke(env, "dlq", "list", "--json").stdout.splitlines()]
    assert rows == from_api and len(rows) == 2
    assert stream_order(rows[0]["id"].split(":")[1]) > stream_order(rows[1]["id"].split(":")[1])
    assert [json.loads(line) for line in invoke(env, "dlq", "list", "--json", "-n", "1").stdout.splitlines()] == rows[
        :1
    ]


@pytest.mark.parametrize("how", [("one",), ("--all",)])
def test_a_cli_replay_leaves_its_note_on_the_thread(env, settings, how):
    async def dead_letter() -> tuple[str, str]:
        async with running(settings, agents=[EchoAgent()], builtins=False) as rt:
            thread = await launch_thread(rt, "echo", "hi", None)
            stream = rt.keys.inbound(0)
            await rt.streams.ensure_group(stream, "workers")
            entry_id, fields = (await rt.redis.xreadgroup("workers", "t", {stream: ">"}, count=1))[0][1][0]
            dead_id = await rt.redis.xadd(rt.keys.dlq(0), {**fields, "source": stream, "source_id": entry_id})
            return thread.id, f"0:{dead_id}"

    tid, ref = asyncio.run(dead_letter())
    args = ("dlq", "replay", ref) if how == ("one",) else ("dlq", "replay", "--all")
    assert invoke(env, *args).exit_code == 0

    async def queued() -> list[dict[str, str]]:
        async with running(settings, builtins=False) as rt:
            rows = await rt.redis.xrange(rt.keys.inbound(0))
            return [fields for _, fields in rows if fields.get("t") == tid]

    entries = asyncio.run(queued())
    kinds = [e["k"] for e in entries]
    # The note comes before the entry it speaks of, so the thread's writer appends it first.
    assert kinds[-2:] == ["note", "continue"]
    note = json.loads(entries[-2]["d"])
    assert note["kind"] == "replay" and note["sender"] == "cli" and "replayed" in note["text"]


def test_the_console_format_and_json_format_are_chosen_by_setting(env, settings, capsys):
    from gateway.logs import configure_logging

    configure_logging(settings.model_copy(update={"log_format": "json"}), stream=sys.stderr)
    structlog.get_logger("frontdesk.test").info("hello", thread_id="th_1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line) | {"timestamp": None} == {
        "event": "hello",
        "thread_id": "th_1",
        "logger": "frontdesk.test",
        "level": "info",
        "timestamp": None,
    }
    configure_logging(settings.model_copy(update={"log_format": "console"}), stream=sys.stderr)
    structlog.get_logger("frontdesk.test").warning("readable", thread_id="th_2")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "readable" in line and "thread_id=th_2" in line and not line.startswith("{")


def _chat_server(status: int, body: dict) -> LoopbackServer:
    async def answer(request):
        return JSONResponse(body, status_code=status)

    return LoopbackServer(Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST"])]))


def test_check_model_sends_one_request_and_says_what_the_server_accepted(env):
    call = {"type": "function", "function": {"name": "done_for_now", "arguments": '{"message": "ok"}'}}
    body = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}], "usage": {}}
    with _chat_server(200, body) as server:
        url = f"{server.url}/v1"
        result = invoke({**env, "FRONTDESK_MODEL": "openai:smollm2", "OPENAI_BASE_URL": url}, "check", "--model")
    assert result.exit_code == 0, result.output
    assert f"openai:smollm2 at {url}: answered" in result.stdout
    assert "accepts  tool_choice=required, parallel_tool_calls=False" in result.stdout
    assert "answer   a call to done_for_now" in result.stdout


def test_check_model_fails_with_the_servers_words_when_it_is_down(env):
    with _chat_server(401, {"error": {"message": "Incorrect API key provided"}}) as server:
        model = {"FRONTDESK_MODEL": "openai:gpt-test", "OPENAI_BASE_URL": f"{server.url}/v1"}
        result = invoke({**env, **model}, "check", "--model")
    assert result.exit_code == 1
    assert "FAILED: openai: 401 Incorrect API key provided" in result.stdout


async def _seed_sessions(settings, *sids: str) -> None:
    async with running(settings, builtins=False) as rt:
        for sid in sids:
            await DashboardSessions(rt.redis, rt.keys).add(sid, 3600, "10.0.0.9", "cli-test")


async def _live_sessions(settings) -> list[bool]:
    async with running(settings, builtins=False) as rt:
        store = DashboardSessions(rt.redis, rt.keys)
        return [await store.live(sid) for sid in ("s-one", "s-two")]


def test_dashboard_sessions_lists_and_ends_them_all(env, settings):
    asyncio.run(_seed_sessions(settings, "s-one", "s-two"))
    listed = invoke(env, "dashboard", "sessions", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["ref"] for r in rows) == sorted(ref_of(s) for s in ("s-one", "s-two"))
    assert "s-one" not in listed.stdout  # a digest, never the id a cookie carries
    plain = invoke(env, "dashboard", "sessions")
    assert plain.exit_code == 0 and len(plain.stdout.splitlines()) == 2 and "10.0.0.9" in plain.stdout
    ended = invoke(env, "dashboard", "sessions", "--end-all")
    assert ended.exit_code == 0 and ended.stdout.strip() == "ended 2 sessions"
    assert asyncio.run(_live_sessions(settings)) == [False, False]
    assert invoke(env, "dashboard", "sessions").stdout == ""
