from agents.helpdesk.agent import Helpdesk, HelpdeskSettings

__all__ = ["Helpdesk", "HelpdeskSettings"]
