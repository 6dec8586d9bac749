"""Who may answer and who may approve, on every channel; every decision records who made it.

In each test a thread waits for a person; a stranger's answer and a
non-approver's decision arrive through the channel's real inbound path, and the
thread keeps waiting (a `refused` note names the stranger). Then the right
person answers and the decision's `by` is their channel identity.
"""

from __future__ import annotations

import asyncio

from fake_slack import TEAM, click, mention, message
from helpers import eventually
from seckit import API_TOKEN, APPROVALS_NUMBER, OUR_NUMBER, Callbacks, mail_to, relay, reply_mail, smtp_serving, stack
from servers import LoopbackServer

THEM, STRANGER = "+15551230001", "+15557770000"
ALICE, MALLORY = "alice@example.com", "mallory@example.net"


def _refused(thread, identity: str) -> bool:
    return any(e.type == "note" and e.kind == "refused" and e.sender == identity for e in thread.events)


def _decisions(thread) -> list:
    return [e for e in thread.events if e.type == "approval_decision"]


async def test_slack_a_stranger_cannot_answer_nor_approve(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path) as s, s.workers():
        # A question in a channel thread, asked of U1.
        await s.slack_event(mention("reset my password", ts="1710000000.000100"))
        conversation = f"{TEAM}/C1/1710000000.000100"
        thread = await s.thread_of("slack", conversation)
        await s.wait_status(thread.id, "waiting_human")
        await s.slack_event(
            message("I answer for them", ts="1710000001.000100", thread_ts="1710000000.000100", user="U2")
        )
        await eventually(lambda: s.slack.to("chat.postEphemeral"))  # U2 is told, privately
        thread = await s.rt.store.load(thread.id)
        assert thread.status == "waiting_human" and _refused(thread, "slack:U2")
        assert not any(e.type == "human_response" for e in thread.events)

        # An approval in C2 (the approver agent's channel): U2's click is refused, U1's decides.
        approval, where = await s.slack_approval()
        assert (await s.slack_click(click(user="U2", action_ts="1.1", **where))).status_code == 200
        await eventually(lambda: len(s.slack.to("chat.postEphemeral")) == 2)
        approval = await s.rt.store.load(approval.id)
        assert approval.status == "waiting_approval" and _refused(approval, "slack:U2") and _decisions(approval) == []
        await s.slack_click(click(user="U1", action_ts="1.2", **where))
        await s.wait_status(approval.id, "done")
        [decision] = _decisions(await s.rt.store.load(approval.id))
        assert decision.approved and decision.by == "slack:U1"


async def test_sms_a_stranger_cannot_answer_nor_approve(redis_url, prefix, tmp_path):
    """On SMS the conversation is (their number, ours): another number never reaches the thread at all."""
    async with stack(redis_url, prefix, tmp_path) as s, s.workers():
        await s.sms(THEM, "hello")
        asked = await s.thread_of("sms", f"{THEM}/{OUR_NUMBER}")
        await s.wait_status(asked.id, "waiting_human")
        await s.sms(STRANGER, "blue")  # to the same number of ours
        await s.sms(THEM, "1.2.3", to=APPROVALS_NUMBER)
        approval = await s.thread_of("sms", f"{THEM}/{APPROVALS_NUMBER}")
        await s.wait_status(approval.id, "waiting_approval")
        await s.sms(STRANGER, "YES", to=APPROVALS_NUMBER)
        # The stranger's texts started threads of their own; they asked nothing of ours.
        theirs = await s.thread_of("sms", f"{STRANGER}/{APPROVALS_NUMBER}")
        await s.wait_status(theirs.id, "waiting_approval")
        assert theirs.id != approval.id
        for thread_id, status in ((asked.id, "waiting_human"), (approval.id, "waiting_approval")):
            thread = await s.rt.store.load(thread_id)
            assert thread.status == status and all(
                getattr(e, "sender", None) != f"sms:{STRANGER}" for e in thread.events
            )
        await s.sms(THEM, "yes", to=APPROVALS_NUMBER)
        await s.wait_status(approval.id, "done")
        [decision] = _decisions(await s.rt.store.load(approval.id))
        assert decision.approved and decision.by == f"sms:{THEM}"


async def test_email_a_stranger_cannot_answer_nor_approve(redis_url, prefix, tmp_path):
    async with relay() as (sink, where):
        async with (
            stack(
                redis_url,
                prefix,
                tmp_path,
                smtp_relay=where,
                email_token_secret="authz",
                email_trusted_authserv_id="mx.example.com",
            ) as s,
            smtp_serving(s.rt) as port,
            s.workers(),
        ):
            new = "From: <{a}>\nTo: {to}\nSubject: {subject}\nMessage-ID: <{mid}>\n\n{text}\n"
            await asyncio.to_thread(
                mail_to,
                port,
                new.format(
                    a=ALICE, to="echo@frontdesk.localhost", subject="VPN", mid="q1@example.com", text="vpn down"
                ),
                mail_from=ALICE,
                rcpt="echo@frontdesk.localhost",
            )
            await asyncio.to_thread(
                mail_to,
                port,
                new.format(
                    a=ALICE, to="approver@frontdesk.localhost", subject="Deploy", mid="d1@example.com", text="1.4.2"
                ),
                mail_from=ALICE,
                rcpt="approver@frontdesk.localhost",
            )
            await eventually(lambda: len(sink.to(ALICE)) == 2)
            question = next(m for m in sink.to(ALICE) if "echo" in m["From"])
            request = next(m for m in sink.to(ALICE) if "approver" in m["From"])
            # Mallory saw both mails (a forward, a shared mailbox) and answers them, threading headers and all.
            await asyncio.to_thread(
                mail_to,
                port,
                reply_mail(question, "m1@example.net", "ignore that", sender=MALLORY),
                mail_from=MALLORY,
                rcpt=question["Reply-To"],
            )
            await asyncio.to_thread(
                mail_to,
                port,
                reply_mail(request, "m2@example.net", "APPROVE", sender=MALLORY),
                mail_from=MALLORY,
                rcpt=request["Reply-To"],
            )
            await eventually(lambda: len(sink.to(MALLORY)) == 2)  # each refusal told politely
            asked = await s.rt.store.load(await s.rt.ingest.thread_for("email", "<q1@example.com>"))
            approval = await s.rt.store.load(await s.rt.ingest.thread_for("email", "<d1@example.com>"))
            assert asked.status == "waiting_human" and _refused(asked, f"email:{MALLORY}")
            assert (
                approval.status == "waiting_approval"
                and _refused(approval, f"email:{MALLORY}")
                and _decisions(approval) == []
            )
            await asyncio.to_thread(
                mail_to,
                port,
                # Alice's decision passed DMARC at our relay, which says so on top (RFC 8601).
                "Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\n"
                + reply_mail(request, "a2@example.com", "APPROVE", sender=ALICE),
                mail_from=ALICE,
                rcpt=request["Reply-To"],
            )
            await s.wait_status(approval.id, "done")
            [decision] = _decisions(await s.rt.store.load(approval.id))
            assert decision.approved and decision.by == f"email:{ALICE}"


async def test_webhook_another_caller_cannot_answer_nor_approve(redis_url, prefix, tmp_path):
    callbacks = Callbacks()
    with LoopbackServer(callbacks.app) as server:
        ours, theirs = f"{server.url}/ours", f"{server.url}/theirs"
        async with stack(redis_url, prefix, tmp_path) as s, s.workers():
            asked = (await s.webhook("echo", {"text": "hello", "callback_url": ours})).json()["thread_id"]
            approval = (await s.webhook("approver", {"text": "1.2.3", "callback_url": ours})).json()["thread_id"]
            await s.wait_status(asked, "waiting_human")
            await s.wait_status(approval, "waiting_approval")
            # Another caller of the same agents names the threads and answers from its own callback.
            await s.webhook("echo", {"text": "my answer", "conversation": asked, "callback_url": theirs})
            decision = {"call_id": "call-1", "approved": True}
            await s.webhook(
                "approver", {"text": "approve", "conversation": approval, "callback_url": theirs, "decision": decision}
            )
            await eventually(lambda: len(callbacks.to("/theirs")) == 2)  # each refusal told to its caller
            for thread_id, status in ((asked, "waiting_human"), (approval, "waiting_approval")):
                thread = await s.rt.store.load(thread_id)
                assert thread.status == status and _refused(thread, f"webhook:{theirs}") and _decisions(thread) == []
            await s.webhook(
                "approver", {"text": "approve", "conversation": approval, "callback_url": ours, "decision": decision}
            )
            await s.wait_status(approval, "done")
            [recorded] = _decisions(await s.rt.store.load(approval))
            assert recorded.approved and recorded.by == f"webhook:{ours}"


async def test_api_resume_needs_the_token_and_records_the_api(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path) as s, s.workers():
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        thread_id = (
            await s.http.post("/api/v1/threads", json={"agent": "approver", "text": "1.2.3"}, headers=auth)
        ).json()["id"]
        await s.wait_status(thread_id, "waiting_approval")
        body = {"type": "approval_decision", "call_id": "call-1", "approved": True}
        for headers in ({}, {"Authorization": "Bearer nope"}):
            assert (
                await s.http.post(f"/api/v1/threads/{thread_id}/events", json=body, headers=headers)
            ).status_code == 401
        assert (await s.rt.store.load(thread_id)).status == "waiting_approval"
        assert (await s.http.post(f"/api/v1/threads/{thread_id}/events", json=body, headers=auth)).status_code == 202
        await s.wait_status(thread_id, "done")
        [decision] = _decisions(await s.rt.store.load(thread_id))
        assert decision.by == "api"


async def test_configured_approvers_replace_the_requester(redis_url, prefix, tmp_path):
    """With `approvers` in frontdesk.toml, the request goes to them and the requester may not approve it."""
    lead = "+15554440000"
    config = f'[agents.approver]\napprovers = ["sms:{lead}"]\n[agents.approver.routes]\nsms = ["{APPROVALS_NUMBER}"]\n'
    async with stack(redis_url, prefix, tmp_path, config=config) as s, s.workers():
        await s.sms(THEM, "1.2.3", to=APPROVALS_NUMBER)
        approval = await s.thread_of("sms", f"{THEM}/{APPROVALS_NUMBER}")
        await s.wait_status(approval.id, "waiting_approval")
        [request] = await eventually(lambda: [m for m in s.twilio.messages if m["To"] == lead])
        await s.sms(THEM, "YES", to=APPROVALS_NUMBER)
        await eventually(lambda: [m for m in s.twilio.messages if m["To"] == THEM])  # told they are not an approver
        approval = await s.rt.store.load(approval.id)
        assert (
            approval.status == "waiting_approval" and _refused(approval, f"sms:{THEM}") and _decisions(approval) == []
        )
        await s.sms(lead, "YES", to=request["From"])  # the lead answers the text they got
        await s.wait_status(approval.id, "done")
        [decision] = _decisions(await s.rt.store.load(approval.id))
        assert decision.approved and decision.by == f"sms:{lead}"
