"""The agent kit: tools as pydantic models, an owned prompt and context, the loop."""

from agents.kit.agent import Agent
from agents.kit.context import Block, parse_blocks, render_context
from agents.kit.tools import DoneForNow, RequestHumanInput, Tool, ToolContext

__all__ = ["Agent", "Block", "DoneForNow", "RequestHumanInput", "Tool", "ToolContext", "parse_blocks", "render_context"]
