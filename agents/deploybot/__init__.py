from agents.deploybot.agent import Deploybot, DeploybotSettings

__all__ = ["Deploybot", "DeploybotSettings"]
