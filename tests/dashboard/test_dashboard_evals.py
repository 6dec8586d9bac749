""" "Save as test" on a thread page: the thread cut at a model turn, written beside the agent."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest
from dashkit import dashboard, message, wait_status

from agents.kit import Agent, Tool, ToolContext, parse_blocks
from agents.kit.evals.cases import Step, load_cases
from agents.kit.testing import next_step


class Shout(Tool):
    """Say it louder."""

    text: str

    async def run(self, ctx: ToolContext) -> str:
        return self.text.upper()


@pytest.fixture
def shouter(tmp_path: Path) -> type[Agent]:
    """A kit agent whose prompt, and so whose evals/, lives in the test's directory."""
    home = tmp_path / "shouter"
    home.mkdir()
    (home / "prompt.md.j2").write_text("You are {{ agent.name }}. Shout what you are told, then say it was shouted.")

    class Shouter(Agent):
        name = "shouter"
        description = "shouts"
        toolbox = (Shout,)
        prompt = home / "prompt.md.j2"

        def demo(self, context: str, tools: list[str]) -> tuple[str, dict[str, Any]]:
            last = parse_blocks(context)[-1]
            if last.tag == "user_message":
                return "shout", {"text": last.body}
            return "done_for_now", {"message": f"shouted: {last.body}"}

    return Shouter


async def test_a_thread_is_saved_as_a_test_with_a_note_and_the_right_step(settings, shouter, tmp_path):
    async with dashboard(settings, agents=[lambda rt: shouter(rt)]) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "shouter")
        thread = await wait_status(dash.rt, accepted.thread_id, "done")
        assert [e.type for e in thread.events] == ["user_message", "tool_call", "tool_result", "done_for_now"]
        url = f"/dashboard/threads/{accepted.thread_id}"
        page = await dash.page(url)
        assert "Save as test" in page.text
        assert '<option value="1">1: tool_call shout</option>' in page.text
        assert '<option value="3" selected>3: done_for_now</option>' in page.text

        saved = tmp_path / "shouter" / "evals" / "saved.jsonl"
        right = '{"tool": "shout", "arguments": {"text": "HELLO"}}'
        r = await dash.post(f"{url}/save-test", {"turn": "1", "note": "shout it in capitals", "expect": right})
        assert r.status_code == 303 and r.headers["location"] == f"{url}?flash=saved"
        assert "Saved as an eval case" in (await dash.client.get(f"{url}?flash=saved")).text
        [stored] = load_cases(saved.parent)
        case = stored.case
        assert (case.thread, case.turn, case.note) == (accepted.thread_id, 1, "shout it in capitals")
        assert case.expected == Step(tool="shout", arguments={"text": "hello"})
        assert case.wanted == Step(tool="shout", arguments={"text": "HELLO"})
        assert [e.type for e in case.events] == ["user_message"]
        # The case re-runs as a turn: the demo shouts "hello", which the note says is wrong.
        agent = dash.rt.agents["shouter"]
        assert not agent.same_step(case.wanted, await next_step(agent, case.as_thread()))

        r = await dash.post(f"{url}/save-test", {"turn": "3"}, headers={"X-Requested-With": "fetch"})
        assert r.status_code == 202 and r.json()["ok"] is True
        assert [s.case.turn for s in load_cases(saved.parent)] == [1, 3]


@pytest.mark.parametrize(
    "form, status, said",
    [
        ({"turn": "2"}, 422, "event 2 of th_"),  # the tool result is not a model turn
        ({"turn": "1", "expect": "{oops"}, 422, "The expected step is not JSON"),
        ({"turn": "1", "expect": '{"tool": "whisper", "arguments": {}}'}, 422, "shouter has no tool 'whisper'"),
        ({"turn": ""}, 422, "Choose a turn"),
    ],
)
async def test_a_bad_save_says_why_and_writes_nothing(settings, shouter, tmp_path, form, status, said):
    async with dashboard(settings, agents=[lambda rt: shouter(rt)]) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "shouter")
        await wait_status(dash.rt, accepted.thread_id, "done")
        url = f"/dashboard/threads/{accepted.thread_id}"
        await dash.page(url)
        r = await dash.post(f"{url}/save-test", form, headers={"X-Requested-With": "fetch"})
        assert r.status_code == status and said in html.unescape(r.json()["message"]), r.text
        assert not (tmp_path / "shouter" / "evals").exists()


async def test_saving_needs_the_csrf_token(settings, shouter, tmp_path):
    async with dashboard(settings, agents=[lambda rt: shouter(rt)]) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello", channel="api"), "shouter")
        await wait_status(dash.rt, accepted.thread_id, "done")
        url = f"/dashboard/threads/{accepted.thread_id}"
        r = await dash.client.post(f"{url}/save-test", data={"turn": "1"})
        assert r.status_code == 403
        assert not (tmp_path / "shouter" / "evals").exists()
