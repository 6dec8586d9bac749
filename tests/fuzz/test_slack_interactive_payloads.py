"""The newer Slack payloads, fuzzed: a choice click, a modal submission, a request's workspace.

Like `test_slack_payloads.py`: read from a signed request, odd types or missing fields are
ignored (None), never an exception.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qs

from fuzzkit import FUZZ, bounded, json_values
from hypothesis import given
from hypothesis import strategies as st

from channels.slack.api import Me
from channels.slack.approvals import DECISION_VIEW, REASON, from_submission
from channels.slack.inbound import Parsed, from_click
from channels.slack.oauth import workspace_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "channels"))
from fake_slack import BOT_USER, TEAM, click, submission

ME = Me(team=TEAM, user_id=BOT_USER)
VIEW = {
    "id": "V1",
    "type": "modal",
    "callback_id": DECISION_VIEW,
    "private_metadata": json.dumps({"call_id": "c1", "approved": False, "channel": "C1", "ts": "1.2", "root": "1.0"}),
    "blocks": [],
}


def _ok(parsed: Parsed | None) -> None:
    assert parsed is None or (isinstance(parsed, Parsed) and parsed.message.sender and not parsed.start)


@FUZZ
@given(body=json_values)
def test_any_json_is_ignored_or_parsed_never_an_error(body):
    with bounded():
        body = body if isinstance(body, dict) else {"view": body, "actions": body}
        _ok(from_click(body, ME))
        _ok(from_submission(body, ME))
        enterprise, team = workspace_of(body)
        assert all(v is None or isinstance(v, str) for v in (enterprise, team))


@FUZZ
@given(
    view_changes=st.dictionaries(
        st.sampled_from(["id", "callback_id", "private_metadata", "state", "team_id"]), json_values, max_size=3
    ),
    reason=json_values,
)
def test_a_real_submission_changed_anywhere_is_still_read_or_ignored(view_changes, reason):
    body = submission({**VIEW, **view_changes}, user="U1", values={REASON: {REASON: {"value": reason}}})
    body["view"].update(view_changes)
    with bounded():
        parsed = from_submission(body, ME)
    _ok(parsed)
    if parsed is not None:
        comment = parsed.message.decision.comment
        assert comment is None or (isinstance(comment, str) and comment == comment.strip() and comment)


@FUZZ
@given(value=json_values | st.text(max_size=80))
def test_a_choice_button_with_any_value(value):
    raw = click(user="U1", channel="C1", message_ts="1.2", thread_ts=None, value=str(value), action_ts="1.1")
    body = json.loads(parse_qs(raw)["payload"][0])
    with bounded():
        parsed = from_click(body, ME)
    _ok(parsed)
    if parsed is not None:
        message = parsed.message
        assert message.decision is not None or (message.text == message.choice == message.data["choice"] != "")
