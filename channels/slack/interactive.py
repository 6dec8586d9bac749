"""Choices as buttons: a question's `choices` posted as one button each, a click as the answer.

A click (read by `inbound.from_click`) becomes the clicker's answer in the question's
conversation, as if they had typed the choice, and answers only that question; the
router decides whether they may answer (else they are told privately). The answer
carries `data={"choice": ...}`, so the core sends a receipt naming the question's
message, and the channel rewrites that message to show the pick and who made it
(its buttons go).

Slack's limits (https://docs.slack.dev/reference/block-kit/blocks/actions-block):
at most 25 elements in an actions block, a button's text 75 characters, its value
2,000. A question with more or longer choices keeps the typed "Reply with one of" only.
"""

from __future__ import annotations

import json
import re
from typing import Any

CHOICE = "frontdesk_choice"
CHOICE_ACTION = re.compile(rf"^{CHOICE}_\d+$")
CHOICES_BLOCK = "frontdesk_choices"
MAX_BUTTONS = 25
MAX_VALUE = 2000


def choice_blocks(text: str, choices: list[str]) -> list[dict[str, Any]] | None:
    """The question as a section and one button per choice; None when Slack could not hold them."""
    values = [json.dumps({"choice": choice}) for choice in choices]
    if not choices or len(choices) > MAX_BUTTONS or any(len(v) > MAX_VALUE for v in values):
        return None
    buttons = [
        {
            # action_ids must differ within a block; the value carries the choice whole.
            "type": "button",
            "action_id": f"{CHOICE}_{index}",
            "text": {"type": "plain_text", "text": _label(choice)},
            "value": value,
        }
        for index, (choice, value) in enumerate(zip(choices, values, strict=True))
    ]
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": CHOICES_BLOCK, "elements": buttons},
    ]


def _label(choice: str) -> str:
    return choice if len(choice) <= 75 else choice[:74] + "…"
