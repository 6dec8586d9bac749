"""What a `frontdesk worker` started by a fault test loads (FRONTDESK_AGENTS=faultkit:agents,
FRONTDESK_CHANNELS=faultkit:channels); in-process tests build the same objects.

`FaultAgent` is an agent of the kit (agents/kit): its model is an OpenAI-compatible
server and its one tool an HTTP call, both answered by the test's control server
(`faultctl.Control`, at FAULT_CONTROL_URL). Messages for people go to the control
server's inbox through the test channel (`plugins.SinkChannel`). Every request
names the process that made it, so the test knows which one to kill.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from plugins import SinkChannel

from agents.kit import Agent, Tool, ToolContext

PID_HEADER = "x-worker-pid"


def control_url() -> str:
    return os.environ["FAULT_CONTROL_URL"].rstrip("/")


class Work(Tool):
    """Do the n-th unit of work of this thread (an HTTP call to the work service)."""

    n: int

    async def run(self, ctx: ToolContext) -> Any:
        r = await ctx.http.post(
            f"{control_url()}/tool",
            json={"thread": ctx.thread.id, "n": self.n},
            headers={PID_HEADER: str(os.getpid())},
            timeout=60,
        )
        r.raise_for_status()
        return r.json()["result"]


class FaultAgent(Agent):
    """Takes `steps` tool turns, asks its person once after `ask` of them, then finishes.

    What to do next is the model's choice (the control server's script); the agent
    is the kit's loop unchanged, with its prompt naming the process.
    """

    name = "faulty"
    description = "works in steps, asks once, finishes"
    toolbox = (Work,)
    prompt = Path(__file__).with_name("faultkit_prompt.md.j2")

    def render_prompt(self, thread) -> str:
        # The control server answers as the model and must know which process asked.
        return super().render_prompt(thread) + f"\nworker-pid: {os.getpid()}\n"


def sink_channel(url: str) -> SinkChannel:
    """The test channel, delivering to `url` and naming this process on each post."""
    channel = SinkChannel(url)
    channel.client.headers[PID_HEADER] = str(os.getpid())
    return channel


def agents(runtime) -> list[Any]:
    return [FaultAgent(runtime)]


def channels(runtime) -> list[Any]:
    return [sink_channel(f"{control_url()}/inbox")]
