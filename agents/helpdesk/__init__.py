from agents.helpdesk.agent import Helpdesk

__all__ = ["Helpdesk"]
