"""The agent kit (agents/kit) and the sample agents, one folder each."""

from __future__ import annotations

from typing import Any


def load_agents(runtime: Any) -> list[Any]:
    """The sample agents."""
    return []
