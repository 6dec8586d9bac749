"""Evals (agents.kit.evals): cases cut from threads, `frontdesk eval` and `eval save`, cassettes, comparisons.

The CLI runs in-process (typer's CliRunner). A model that reads its prompt is a small
OpenAI-compatible server on loopback which calls `multiply` only while the system prompt
tells it never to compute in its head, and otherwise answers from its head: the real
OpenAI client meets it over a socket, so a changed prompt changes the step as it would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
from helpers import plain_tracebacks
from servers import LoopbackServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from agents.calculator import Calculator
from agents.kit.evals.cases import CaseError, Step, cut, load_cases
from agents.kit.testing import assert_next_step, next_step, thread_of
from gateway.cli import app
from gateway.events import Contact, RequestHumanInput, Thread, ToolCall, ToolResult, Usage, UserMessage, new_id
from gateway.runtime import running
from gateway.store.threads import ThreadStore

REPO = Path(__file__).resolve().parents[2]
PROMPT = REPO / "agents" / "calculator" / "prompt.md.j2"
RULE = "never compute in your head"
USED = Usage(input_tokens=10, output_tokens=2, model="demo")


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI configures logging for its process; put the test process's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    plain_tracebacks()


class HeadOrTools:
    """Chat Completions on loopback: `multiply` while the prompt forbids mental arithmetic, else an answer."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.answer, methods=["POST"])])

    async def answer(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        system = next(m["content"] for m in body["messages"] if m["role"] == "system")
        if RULE in system:
            call = {"name": "multiply", "arguments": json.dumps({"a": 6, "b": 7})}
        else:
            call = {"name": "done_for_now", "arguments": json.dumps({"message": "It is 42."})}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": call}],
        }
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "fake",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 5, "total_tokens": 45},
            }
        )


@pytest.fixture
def model_server():
    fake = HeadOrTools()
    with LoopbackServer(fake.app) as server:
        fake.url = server.url + "/v1"
        yield fake


@pytest.fixture
def env(settings, tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no .env or frontdesk.toml of the repository's
    for name in os.environ:
        if name.startswith(("FRONTDESK_", "OPENAI_")):
            monkeypatch.delenv(name)
    return {
        "FRONTDESK_REDIS_URL": settings.redis_url,
        "FRONTDESK_KEY_PREFIX": settings.key_prefix,
        "FRONTDESK_MODEL": "demo",
    }


def invoke(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


def times_thread() -> Thread:
    """A calculator thread as the demo model made it: multiply, then ask what to divide by."""
    return Thread(
        id=new_id("th_"),
        agent="calculator",
        origin=Contact(channel="api", address="cli"),
        events=[
            UserMessage(text="What is 6 times 7?", sender="cli", channel="api"),
            ToolCall(call_id="call_1", tool="multiply", arguments={"a": 6.0, "b": 7.0}, usage=USED),
            ToolResult(call_id="call_1", result=42.0),
            RequestHumanInput(text="[demo model] I got 42. What should I divide 42 by?", usage=USED),
        ],
    )


def export(tmp_path: Path, *threads: Thread) -> Path:
    """Threads as `frontdesk threads show --json` prints them, one per line."""
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(t.public()) + "\n" for t in threads))
    return path


# ---------------------------------------------------------------- the sample agents' suites


def test_the_sample_agents_ship_eval_cases_that_pass_with_the_demo_model(env):
    result = invoke(env, "eval")
    assert result.exit_code == 0, result.output
    for agent in ("calculator", "deploybot", "helpdesk"):
        assert f"{agent}: " in result.stdout
        assert load_cases(REPO / "agents" / agent / "evals"), agent
    assert "FAIL" not in result.stdout
    assert result.stdout.strip().endswith("passed: every column at or above 100%")


# ---------------------------------------------------------------- a prompt change that breaks a case


def test_a_changed_prompt_that_breaks_a_recorded_case_fails_with_a_readable_diff(env, tmp_path, model_server):
    env = {**env, "OPENAI_BASE_URL": model_server.url, "OPENAI_API_KEY": "sk-test"}
    cases = tmp_path / "cases"
    saved = invoke(env, "eval", "save", str(export(tmp_path, times_thread())), "--turn", "1", "--cases", str(cases))
    assert saved.exit_code == 0, saved.output
    assert saved.stdout.startswith("saved th_") and "turn 1 (multiply)" in saved.stdout

    today = invoke(env, "eval", "calculator", "--cases", str(cases), "--model", "openai:fake")
    assert today.exit_code == 0, today.output
    assert "1/1 100%" in today.stdout

    changed = tmp_path / "changed.md.j2"
    changed.write_text(PROMPT.read_text().replace(RULE, "work the answer out yourself"))
    result = invoke(
        env, "eval", "calculator", "--cases", str(cases), "--model", "openai:fake", "--prompt", str(changed)
    )
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "FAIL calculator saved.jsonl:1 [openai:fake · changed.md.j2]" in out
    assert 'context the model saw:\n    | <user_message from="cli" channel="api">\n    | What is 6 times 7?' in out
    side_by_side = [
        "    expected       | got",
        "  * tool: multiply | tool: done_for_now",
        '  *   a: 6.0       |   message: "It is 42."',
        "  *   b: 7.0       |",
    ]
    assert "\n".join(side_by_side) in out
    assert "FAILED: below the pass rate of 100%: calculator [openai:fake · changed.md.j2] 0%" in out


def test_two_prompts_are_two_columns_and_json_says_the_same(env, tmp_path, model_server):
    env = {**env, "OPENAI_BASE_URL": model_server.url, "OPENAI_API_KEY": "sk-test"}
    cases = tmp_path / "cases"
    assert invoke(env, "eval", "save", str(export(tmp_path, times_thread())), "--cases", str(cases)).exit_code == 0
    changed = tmp_path / "changed.md.j2"
    changed.write_text(PROMPT.read_text().replace(RULE, "work the answer out yourself"))
    both = ["eval", "calculator", "--cases", str(cases), "--model", "openai:fake", "--prompt", str(PROMPT)]
    both += ["--prompt", str(changed)]

    table = invoke(env, *both)
    assert table.exit_code == 1
    assert "openai:fake · prompt.md.j2  openai:fake · changed.md.j2" in table.stdout
    # Turn 1 (multiply) passes only with today's prompt; turn 3 (the question) with neither: the fake never asks.
    assert "  pass rate         1/2 50%                     0/2 0%" in table.stdout

    machine = invoke(env, *both, "--json", "--min-pass-rate", "0.5")
    assert machine.exit_code == 1, machine.output  # 0 % is below a half
    body = json.loads(machine.stdout)
    [agent] = body["agents"]
    assert {k: v["passed"] for k, v in agent["columns"].items()} == {
        "openai:fake · prompt.md.j2": 1,
        "openai:fake · changed.md.j2": 0,
    }
    first = agent["cases"][0]
    assert first["expected"] == {"tool": "multiply", "arguments": {"a": 6.0, "b": 7.0}}
    assert first["results"]["openai:fake · changed.md.j2"]["step"] == {
        "tool": "done_for_now",
        "arguments": {"message": "It is 42."},
    }
    assert body["passed"] is False
    lenient = invoke(env, *both, "--json", "--min-pass-rate", "0")
    assert lenient.exit_code == 0 and json.loads(lenient.stdout)["passed"] is True


# ---------------------------------------------------------------- saving cases


def test_eval_save_cuts_a_stored_thread_at_each_model_turn(env, settings, tmp_path):
    thread = times_thread()

    async def store() -> None:
        async with running(settings, builtins=False) as rt:
            await ThreadStore(rt.redis, rt.keys).create(thread)

    asyncio.run(store())
    cases = tmp_path / "cases"
    result = invoke(env, "eval", "save", thread.id, "--cases", str(cases), "--note", "from redis")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("saved ") == 2  # the tool call and the question
    stored = load_cases(cases)
    assert [(s.case.turn, s.case.wanted.tool, len(s.case.events)) for s in stored] == [
        (1, "multiply", 1),
        (3, "request_human_input", 3),
    ]
    assert stored[1].case.expected.arguments["question"] == "[demo model] I got 42. What should I divide 42 by?"
    assert all(s.case.note == "from redis" for s in stored)

    again = invoke(env, "eval", "save", thread.id, "--cases", str(cases))
    assert again.exit_code == 0
    assert len((cases / "saved.jsonl").read_text().splitlines()) == 2  # replaced, not doubled
    assert invoke(env, "eval", "calculator", "--cases", str(cases)).exit_code == 0


@pytest.mark.parametrize(
    "args, said",
    [
        (["--turn", "2"], "event 2 of th_"),  # a tool result: not a model turn
        (["--turn", "1", "--expect", "{not json"], "--expect is not JSON"),
        (["--turn", "1", "--expect", '{"tool": "sqrt", "arguments": {}}'], "calculator has no tool 'sqrt'"),
        (["--turn", "1", "--expect", '{"tool": "add", "arguments": {"a": "x"}}'], "arguments for add do not validate"),
        (["--expect", '{"tool": "add", "arguments": {"a": 1, "b": 2}}'], "give that turn with --turn N"),
    ],
)
def test_a_bad_save_says_why_and_writes_nothing(env, tmp_path, args, said):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "saved.jsonl").write_text("")
    result = invoke(env, "eval", "save", str(export(tmp_path, times_thread())), "--cases", str(cases), *args)
    assert result.exit_code == 2, result.output
    assert said in result.stderr and "Traceback" not in result.output
    assert (cases / "saved.jsonl").read_text() == ""


def test_a_wrong_recorded_step_is_saved_with_the_right_one_and_fails_until_the_model_takes_it(env, tmp_path):
    thread = Thread(
        id=new_id("th_"),
        agent="calculator",
        origin=Contact(channel="api", address="cli"),
        events=[
            UserMessage(text="add some numbers", sender="cli", channel="api"),
            RequestHumanInput(text="[demo model] Which two numbers should I work with?", usage=USED),
            UserMessage(text="3 and 4", sender="cli", channel="api"),
            RequestHumanInput(text="[demo model] Which two numbers should I work with?", usage=USED),
        ],
    )
    cases = tmp_path / "cases"
    right = '{"tool": "add", "arguments": {"a": 3, "b": 4}}'
    note = "the numbers came in the second message"
    saved = invoke(
        env,
        "eval",
        "save",
        str(export(tmp_path, thread)),
        "--turn",
        "3",
        "--expect",
        right,
        "--note",
        note,
        "--cases",
        str(cases),
    )
    assert saved.exit_code == 0, saved.output
    [stored] = load_cases(cases)
    assert stored.case.expected.tool == "request_human_input"
    assert stored.case.wanted == Step(tool="add", arguments={"a": 3.0, "b": 4.0})
    result = invoke(env, "eval", "calculator", "--cases", str(cases))
    assert result.exit_code == 1
    assert f"  note: {note}" in result.stdout
    assert "* tool: add" in result.stdout and "| tool: request_human_input" in result.stdout


# ---------------------------------------------------------------- cassettes


def test_a_cassette_records_answers_and_replays_them_without_the_model(env, tmp_path, model_server):
    env = {**env, "OPENAI_API_KEY": "sk-test"}
    cases, tape = tmp_path / "cases", tmp_path / "cassette.json"
    assert (
        invoke(
            env, "eval", "save", str(export(tmp_path, times_thread())), "--turn", "1", "--cases", str(cases)
        ).exit_code
        == 0
    )
    run = ["eval", "calculator", "--cases", str(cases), "--model", "openai:fake", "--cassette", str(tape)]

    missing = invoke({**env, "OPENAI_BASE_URL": model_server.url}, *run)
    assert missing.exit_code == 2 and f"no cassette at {tape}" in missing.stderr

    recorded = invoke({**env, "OPENAI_BASE_URL": model_server.url}, *run, "--record")
    assert recorded.exit_code == 0, recorded.output
    assert len(model_server.requests) == 1
    [answer] = json.loads(tape.read_text())["answers"].values()
    assert (answer["model"], answer["tool"]) == ("openai:fake", "multiply")

    # Replayed with no server at all: port 9 (discard) answers nothing.
    replayed = invoke({**env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, *run)
    assert replayed.exit_code == 0, replayed.output
    assert "1/1 100%" in replayed.stdout and len(model_server.requests) == 1

    changed = tmp_path / "changed.md.j2"
    changed.write_text(PROMPT.read_text().replace(RULE, "work the answer out yourself"))
    unseen = invoke({**env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, *run, "--prompt", str(changed))
    assert unseen.exit_code == 1
    assert f"model error: {tape} has no answer of openai:fake to this request" in unseen.stdout


# ---------------------------------------------------------------- comparisons, and the pytest helper


async def test_an_agent_supplies_its_own_comparison(settings):
    async with running(settings) as rt:
        calc = rt.agents["calculator"]
        near = Step(tool="add", arguments={"a": 0.30000000000000004, "b": 1})
        exact = Step(tool="add", arguments={"a": 0.3, "b": 1})
        assert calc.same_step(exact, near)  # the calculator's tolerance
        assert not super(Calculator, calc).same_step(exact, near)  # the kit's default: equal arguments
        assert not calc.same_step(exact, Step(tool="add", arguments={"a": 0.31, "b": 1}))
        assert not calc.same_step(exact, Step(tool="subtract", arguments={"a": 0.3, "b": 1}))
        case = cut(calc, times_thread(), 1, expect={"tool": "multiply", "arguments": {"a": 6.0000000000001, "b": 7}})
        assert calc.same_step(case.wanted, await next_step(calc, case.as_thread()))
        with pytest.raises(CaseError, match="its model turns: 1, 3"):
            cut(calc, times_thread(), 0)


async def test_assert_next_step_passes_on_the_named_arguments_and_shows_a_diff_otherwise(settings):
    async with running(settings) as rt:
        calc = rt.agents["calculator"]
        thread = thread_of(calc, "What is 6 times 7?")
        step = await assert_next_step(calc, thread, "multiply", a=6, b=7)
        assert step == Step(tool="multiply", arguments={"a": 6.0, "b": 7.0})
        await assert_next_step(calc, thread, "multiply", b=7)  # a field subset
        with pytest.raises(AssertionError) as failed:
            await assert_next_step(calc, thread, "add", a=6, b=7)
        assert "* tool: add | tool: multiply" in str(failed.value)
        assert "What is 6 times 7?" in str(failed.value)


def test_a_broken_case_file_or_a_bad_option_is_one_line_and_exit_2(env, tmp_path):
    cases = tmp_path / "cases"
    assert (
        invoke(
            env, "eval", "save", str(export(tmp_path, times_thread())), "--turn", "1", "--cases", str(cases)
        ).exit_code
        == 0
    )
    with (cases / "saved.jsonl").open("a") as f:
        f.write('{"agent": "calculator", "thread": "th_x"}\n')
    broken = invoke(env, "eval", "calculator", "--cases", str(cases))
    assert broken.exit_code == 2
    assert f"{cases / 'saved.jsonl'}:2: not an eval case: turn: Field required" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1 and "Traceback" not in broken.output

    no_agent = invoke(env, "eval", "--prompt", str(PROMPT))
    assert no_agent.exit_code == 2 and "name the agent" in no_agent.stderr
    unknown = invoke(env, "eval", "nosuch")
    assert unknown.exit_code == 2 and "no agent named 'nosuch'" in unknown.stderr
    empty = invoke(env, "eval", "calculator", "--cases", str(tmp_path / "none"))
    assert empty.exit_code == 2 and "no eval cases in" in empty.stderr


def test_two_models_are_two_columns(env, tmp_path, model_server):
    env = {**env, "OPENAI_BASE_URL": model_server.url, "OPENAI_API_KEY": "sk-test"}
    cases = tmp_path / "cases"
    assert invoke(env, "eval", "save", str(export(tmp_path, times_thread())), "--cases", str(cases)).exit_code == 0
    result = invoke(env, "eval", "calculator", "--cases", str(cases), "--model", "demo", "--model", "openai:fake")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["demo", "openai:fake"]
    assert lines[2].split() == ["saved.jsonl:1", "@1", "pass", "pass"]
    assert lines[3].split() == ["saved.jsonl:2", "@3", "pass", "FAIL"]  # the fake never asks
    assert "FAIL calculator saved.jsonl:2 [openai:fake]" in result.stdout
    assert "[demo]:" not in result.stdout
