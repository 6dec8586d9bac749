"""The thread page reads as a story: messages with their channel, tool calls with arguments and
results, deliveries, and — for agents that render their own context — the window the model saw."""

from __future__ import annotations

import re

from dashkit import dashboard, message, wait_status
from helpers import eventually
from plugins import EchoAgent

from agents import load_agents
from gateway.launch import launch_thread


async def test_each_model_turn_shows_the_context_rendered_from_the_thread_before_it(settings):
    async with dashboard(settings, agents=[load_agents]) as dash:
        thread = await launch_thread(dash.rt, "calculator", "What is 6 times 7?", by="ops")
        thread = await wait_status(dash.rt, thread.id, "waiting_human")
        url = f"/dashboard/threads/{thread.id}"
        page = (await dash.page(url)).text
        turns = [i for i, e in enumerate(thread.events) if getattr(e, "usage", None) is not None]
        assert turns and [int(i) for i in re.findall(r'data-src="[^"]*/context/(\d+)\?raw=1"', page)] == turns
        assert "Tool call: multiply" in page and "&#34;a&#34;: 6.0" in page and "42.0" in page
        assert "Model turn · demo" in page and "Waiting for an answer" in page
        agent = dash.rt.agents["calculator"]
        for index in turns:
            raw = await dash.client.get(f"{url}/context/{index}?raw=1")
            prefix = thread.model_copy(update={"events": thread.events[:index]})
            assert raw.status_code == 200 and raw.text == agent.render_context(prefix)
        # The last turn saw the tool's result; the first saw only the question.
        assert "<tool_result" in raw.text
        first = (await dash.client.get(f"{url}/context/{turns[0]}?raw=1")).text
        assert first.startswith("<user_message") and "tool_result" not in first
        standalone = await dash.client.get(f"{url}/context/{turns[0]}")
        assert "Context before step" in standalone.text and "&lt;user_message" in standalone.text
        assert (await dash.client.get(f"{url}/context/999")).status_code == 404


async def test_an_agent_without_render_context_has_no_context_panel(settings, sink):
    async with dashboard(settings, sink, agents=[EchoAgent()]) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "<b>hi</b>", sender="+15550001"), "echo")
        thread = await wait_status(dash.rt, accepted.thread_id, "waiting_human")
        url = f"/dashboard/threads/{thread.id}"
        page = (await dash.page(url)).text
        assert "Context the model saw" not in page
        assert (await dash.client.get(f"{url}/context/1?raw=1")).status_code == 404
        # What the person wrote is shown as text, never as markup.
        assert "&lt;b&gt;hi&lt;/b&gt;" in page and "<b>hi</b>" not in page
        assert "from test:+15550001" in page and 'class="chip">test<' in page
        assert "to test:+15550001" in page  # the question went back where it came from


async def test_deliveries_show_on_the_message_they_carried(settings, sink):
    async with dashboard(settings, sink, agents=[EchoAgent()]) as dash:
        accepted = await dash.rt.ingest.accept(message("m1", "hello"), "echo")

        async def delivered():
            thread = await dash.rt.store.load(accepted.thread_id)
            return thread if thread and any(e.type == "delivery" for e in thread.events) else None

        thread = await eventually(delivered)
        page = (await dash.page(f"/dashboard/threads/{thread.id}")).text
        question = page[page.index('id="ev-1"') : page.index('id="ev-2"')]
        assert '<span class="dstatus dstatus-sent">test sent</span>' in question
        delivery = page[page.index('id="ev-2"') :]
        assert "Delivery sent" in delivery and "message #1" in delivery and "msg-1" in delivery
        assert (await dash.client.get("/dashboard/threads/th_nope")).status_code == 404
