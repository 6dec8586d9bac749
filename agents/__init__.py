"""The agent kit (agents/kit) and the sample agents, one folder each."""

from __future__ import annotations

from typing import Any


def load_agents(runtime: Any) -> list[Any]:
    """The sample agents, each with the runtime's settings and model."""
    from agents.calculator import Calculator
    from agents.deploybot import Deploybot
    from agents.helpdesk import Helpdesk
    from agents.humanlayer import HumanLayerAgent

    return [Calculator(runtime), Deploybot(runtime), Helpdesk(runtime), HumanLayerAgent(runtime)]
