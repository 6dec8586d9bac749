"""An approval counts only from where it was asked: the number pair it was texted on, the Slack team it was posted in.

Each test has the right person decide from the wrong place first (through the
channel's real inbound path): the thread keeps waiting and records a `refused`
note; then the same person decides from the right place and the call runs.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode

from fake_slack import TEAM, click
from helpers import eventually
from seckit import APPROVALS_NUMBER, OUR_NUMBER, stack

from channels.slack.api import Me
from channels.slack.approvals import decision_view, from_submission
from gateway.messages import ApprovalChoice

THEM = "+15551230001"


def _refused(thread, identity: str) -> list:
    return [e for e in thread.events if e.type == "note" and e.kind == "refused" and e.sender == identity]


def _decisions(thread) -> list:
    return [e for e in thread.events if e.type == "approval_decision"]


async def test_sms_an_approval_from_another_of_our_numbers_is_refused(redis_url, prefix, tmp_path):
    """The approver's number is right, the `To` is not the number the request went from."""
    async with stack(redis_url, prefix, tmp_path) as s, s.workers():
        await s.sms(THEM, "1.2.3", to=APPROVALS_NUMBER)
        approval = await s.thread_of("sms", f"{THEM}/{APPROVALS_NUMBER}")
        await s.wait_status(approval.id, "waiting_approval")
        # The thread once texted THEM from OUR_NUMBER too (an earlier question, another route),
        # so that pair reaches the thread as well; the approval request went from APPROVALS_NUMBER.
        await s.rt.ingest.bind("sms", f"{THEM}/{OUR_NUMBER}", approval.id)
        assert (await s.sms(THEM, "YES", to=OUR_NUMBER)).status_code == 200

        async def refused() -> bool:
            return bool(_refused(await s.rt.store.load(approval.id), f"sms:{THEM}"))

        await eventually(refused)
        thread = await s.rt.store.load(approval.id)
        assert thread.status == "waiting_approval" and _decisions(thread) == []
        # Told so, on the pair it wrote on (not silently dropped).
        await eventually(lambda: any(c["form"].get("From") == OUR_NUMBER for c in s.twilio.calls))
        await s.sms(THEM, "yes", to=APPROVALS_NUMBER)
        await s.wait_status(approval.id, "done")
        [decision] = _decisions(await s.rt.store.load(approval.id))
        assert decision.approved and decision.by == f"sms:{THEM}"


async def test_slack_a_click_by_a_user_of_another_team_is_refused(redis_url, prefix, tmp_path):
    """Same user id as the approver, clicking from another workspace (a shared channel, another install)."""
    async with stack(redis_url, prefix, tmp_path) as s, s.workers():
        approval, where = await s.slack_approval()
        foreign = json.loads(_payload(click(user="U1", action_ts="1.1", **where)))
        foreign["user"]["team_id"] = "T0OTHER"
        assert (await s.slack_click(_form(foreign))).status_code == 200

        async def refused() -> bool:
            return bool(_refused(await s.rt.store.load(approval.id), "slack:T0OTHER/U1"))

        await eventually(refused)
        thread = await s.rt.store.load(approval.id)
        assert thread.status == "waiting_approval" and _decisions(thread) == []
        await s.slack_click(click(user="U1", action_ts="1.2", **where))
        await s.wait_status(approval.id, "done")
        [decision] = _decisions(await s.rt.store.load(approval.id))
        assert decision.approved and decision.by == "slack:U1"


def _payload(form: str) -> str:
    return parse_qs(form)["payload"][0]


def _form(payload: dict) -> str:
    return urlencode({"payload": json.dumps(payload)})


def test_a_reason_modal_submitted_by_a_user_of_another_team_decides_as_that_team_user():
    """The modal path (Approve, then a reason) names the submitter the same way the click path does."""
    view = decision_view(ApprovalChoice(call_id="call-1", approved=True), ("U1", "C2", "1.1", "1.0"), "deploy")
    me = Me(team=TEAM, user_id="UBOT")
    for home, expected in ((TEAM, "U1"), ("T0OTHER", "T0OTHER/U1")):
        body = {
            "type": "view_submission",
            "team": {"id": TEAM},
            "user": {"id": "U1", "team_id": home},
            "view": {**view, "id": f"V-{home}", "state": {"values": {}}},
        }
        parsed = from_submission(body, me)
        assert parsed is not None and parsed.message.decision is not None
        assert parsed.message.sender == expected
