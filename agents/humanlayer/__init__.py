"""humanlayer: the agent behind the HumanLayer agent API (gateway/humanlayer)."""

from agents.humanlayer.agent import HumanLayerAgent

__all__ = ["HumanLayerAgent"]
