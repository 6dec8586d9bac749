"""Choices as buttons: a question's `choices` posted as one button each, a click as the answer.

A click becomes the clicker's answer in the question's conversation, exactly as if
they had typed the choice; the router decides whether they may answer (else they
are told privately). The answer carries `data={"choice": ...}`, so the core sends a
receipt naming the question's message, and `receipt_blocks` rewrites that message
to show the pick and who made it (its buttons go).

Slack's limits (https://docs.slack.dev/reference/block-kit/blocks/actions-block):
at most 25 elements in an actions block, a button's text 75 characters, its value
2,000. A question with more or longer choices keeps the typed "Reply with one of" only.
"""

from __future__ import annotations

import json
import re
from typing import Any

from channels.slack.api import Me
from channels.slack.inbound import Parsed, clicked_action, on_clicked_message

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


def from_choice(body: dict[str, Any], me: Me) -> Parsed | None:
    """A click on a choice button as the clicker's answer; None for a payload that is not one."""
    try:
        choice = json.loads(clicked_action(body).get("value") or "")["choice"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(choice, str) or not choice:
        return None
    return on_clicked_message(body, me, choice, data={"choice": choice})


def _label(choice: str) -> str:
    return choice if len(choice) <= 75 else choice[:74] + "…"
