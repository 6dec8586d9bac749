"""helpdesk: answers from a small FAQ, asks when unclear, hands over to an operator.

The FAQ is fetched before the first model call (factor 13) and lands in the
context. When the FAQ does not cover a question, the agent asks the named contact
`operator` (frontdesk.toml: `[agents.helpdesk] contacts = { operator = "slack:C0OPS" }`)
on that person's own channel, then relays the operator's answer to the customer
on theirs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import SettingsConfigDict

from agents.kit import Agent, ToolContext, parse_blocks
from agents.kit.demo import ask, done
from gateway.events import Thread
from gateway.settings import PluginSettings

HERE = Path(__file__).parent


class HelpdeskSettings(PluginSettings):
    """FRONTDESK_HELPDESK_FAQ: the FAQ file (unset: the sample beside this module)."""

    model_config = SettingsConfigDict(env_prefix="FRONTDESK_HELPDESK_")

    faq: Path = HERE / "faq.yaml"


async def load_faq(thread: Thread, ctx: ToolContext) -> list[dict[str, Any]]:
    path = ctx.agent_settings.faq if isinstance(ctx.agent_settings, HelpdeskSettings) else HERE / "faq.yaml"
    # A small file read once per thread, before the first model call.
    return yaml.safe_load(Path(path).read_text()) or []  # noqa: ASYNC240


def best_answer(faq: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
    words = set(re.findall(r"[a-z]+", text.lower()))
    lowered = text.lower()
    scored = [
        (sum(1 for k in entry.get("keywords", []) if (k in words if " " not in k else k in lowered)), entry)
        for entry in faq
    ]
    score, entry = max(scored, key=lambda pair: pair[0], default=(0, None))
    return entry if score else None


class Helpdesk(Agent):
    name = "helpdesk"
    description = "Answers customers from the FAQ; asks an operator when unsure."
    toolbox = ()
    prompt = HERE / "prompt.md.j2"
    prefetch = {"faq": load_faq}
    settings_class = HelpdeskSettings

    def demo(self, context: str, tools: list[str]) -> tuple[str, dict[str, Any]]:
        blocks = parse_blocks(context)
        faq_block = next((b for b in blocks if b.tag == "context" and b.attrs.get("name") == "faq"), None)
        faq = (yaml.safe_load(faq_block.body) if faq_block else None) or []
        customer, operator_said, asked_to, questions = [], None, None, 0
        for block in blocks:
            if block.tag == "request_human_input":
                asked_to, questions = block.attrs.get("to"), questions + 1
            elif block.tag == "user_message" or (block.tag == "human_response" and not asked_to):
                customer.append(block.body)
            elif block.tag == "human_response":
                operator_said = block.body
        if operator_said is not None and blocks[-1].tag == "human_response":
            return done(f"Our team says: {operator_said}")
        text = " ".join(customer)
        match = best_answer(faq, text)
        if match:
            return done(match["answer"])
        if not questions:
            return ask("Could you tell me a bit more about what you need?")
        if "operator" in self.contacts:
            return ask(
                f"A customer asks: {text!r}. The FAQ does not cover it. What should I answer?", contact="operator"
            )
        return done("I could not find an answer; a person from our team will follow up.")
