from agents.deploybot.agent import Deploybot

__all__ = ["Deploybot"]
