"""Email approvals need an authenticated From: the whole gateway, real SMTP in and out, the dashboard over HTTP.

Each test sends what an attacker can send — an unsigned APPROVE "from" the
approver, a signed one replayed, a forged Authentication-Results header — and
shows it decides nothing, while the approver still gets a way to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from email.message import EmailMessage

import dkimkit
from helpers import eventually
from seckit import mail_to, relay, reply_mail, smtp_serving, stack

from gateway.events import InboundMessage

ALICE, MALLORY = "alice@example.com", "mallory@example.net"
APPROVER = "approver@frontdesk.localhost"
RELAY_ID = "mx.example.com"
NEW = "From: Alice <{a}>\nTo: {to}\nSubject: {subject}\nMessage-ID: <{mid}>\nReply-To: {reply}\n\n{text}\n"
LINK = re.compile(r"https?://\S+?(/dashboard/approve/[A-Za-z0-9_\-]+\.[0-9a-f]{32})")


@contextlib.asynccontextmanager
async def gateway(redis_url, prefix, tmp_path, config: str | None = None, **overrides):
    """(stack, the relay's recorder, our SMTP port, the DNS the email channel asks)."""
    dns = dkimkit.Dns()
    async with relay() as (sink, where):
        async with (
            stack(
                redis_url, prefix, tmp_path, config=config, smtp_relay=where, email_token_secret="auth", **overrides
            ) as s,
            smtp_serving(s.rt) as port,
            s.workers(),
        ):
            s.rt.channels["email"].inbound.auth.resolver = dns
            yield s, sink, port, dns


async def send(port: int, raw: str | bytes, *, mail_from: str, rcpt: str) -> int:
    text = raw.decode() if isinstance(raw, bytes) else raw
    code, _ = await asyncio.to_thread(mail_to, port, text, mail_from=mail_from, rcpt=rcpt)
    return code


async def approval_requested(s, sink, port, mid: str = "d1@example.com") -> tuple[str, EmailMessage]:
    """Alice asks for a deploy; (the thread id, the approval request mailed to her)."""
    raw = NEW.format(a=ALICE, to=APPROVER, subject="Deploy", mid=mid, reply=ALICE, text="1.4.2")
    assert await send(port, raw, mail_from=ALICE, rcpt=APPROVER) == 250
    tid = await eventually(lambda: s.rt.ingest.thread_for("email", f"<{mid}>"))
    await s.wait_status(tid, "waiting_approval")
    await eventually(lambda: [m for m in sink.to(ALICE) if f"<{mid}>" in (m["References"] or m["In-Reply-To"] or "")])
    request = [m for m in sink.to(ALICE) if f"<{mid}>" in (m["References"] or m["In-Reply-To"] or "")][-1]
    return tid, request


def decisions(thread) -> list:
    return [e for e in thread.events if e.type == "approval_decision"]


def notes(thread, kind: str) -> list:
    return [e for e in thread.events if e.type == "note" and e.kind == kind]


def body(mail: EmailMessage) -> str:
    return mail.get_body(("plain",)).get_content()


async def test_an_unsigned_approve_from_the_approver_decides_nothing_and_the_link_does_once(
    redis_url, prefix, tmp_path
):
    async with gateway(redis_url, prefix, tmp_path) as (s, sink, port, _):
        tid, request = await approval_requested(s, sink, port)
        before = len(sink.to(ALICE))
        # Mallory types Alice's address into From and her own into Reply-To.
        forged = reply_mail(request, "f1@example.net", "APPROVE", sender=ALICE).replace(
            "Content-Type:", f"Reply-To: {MALLORY}\nContent-Type:"
        )
        assert await send(port, forged, mail_from=MALLORY, rcpt=request["Reply-To"]) == 250
        await eventually(lambda: len(sink.to(ALICE)) == before + 1)
        thread = await s.rt.store.load(tid)
        assert thread.status == "waiting_approval" and decisions(thread) == []
        [note] = notes(thread, "unverified_sender")
        assert note.sender == f"email:{ALICE}" and note.call_id is not None
        assert "no DKIM signature" in note.text  # the thread records why
        assert sink.to(MALLORY) == []  # the answer goes to the From mailbox, never to the Reply-To
        told = body(sink.to(ALICE)[-1])
        assert "could not be authenticated" in told
        path = LINK.search(told).group(1)

        page = await s.http.get(path)
        assert page.status_code == 200 and "deploy" in page.text and f"email:{ALICE}" in page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
        missing = await s.http.post(path, data={"decision": "approve"})
        assert missing.status_code == 403  # no form token: nothing enqueued
        done = await s.http.post(path, data={"decision": "approve", "csrf": csrf, "comment": "via the link"})
        assert done.status_code == 202, done.text
        await s.wait_status(tid, "done")
        again = await s.http.post(path, data={"decision": "deny", "csrf": csrf})
        assert again.status_code in (409, 410)  # used: the first decision stands
        [decision] = decisions(await s.rt.store.load(tid))
        assert decision.approved and decision.by == f"email:{ALICE}" and decision.comment == "via the link"
        tampered = path[:-1] + ("0" if path[-1] != "0" else "1")
        assert (await s.http.get(tampered)).status_code == 403


async def test_a_signed_approve_decides_and_its_replays_do_not(redis_url, prefix, tmp_path):
    async with gateway(redis_url, prefix, tmp_path) as (s, sink, port, dns):
        key = dkimkit.new_key()
        dns.publish("example.com", key)
        tid, request = await approval_requested(s, sink, port)
        signed = dkimkit.sign(
            dkimkit.crlf(reply_mail(request, "a1@example.com", "APPROVE", sender=ALICE)), "example.com", key
        )
        assert await send(port, signed, mail_from=ALICE, rcpt=request["Reply-To"]) == 250
        await s.wait_status(tid, "done")
        # The same bytes again (a relay's retry, or someone who kept a copy): one decision, by Message-ID.
        assert await send(port, signed, mail_from=ALICE, rcpt=request["Reply-To"]) == 250
        again = InboundMessage(id="<a1@example.com>", channel="email", conversation="<d1@example.com>", sender=ALICE)
        assert (await s.rt.channels["email"].inbox.accept(again, agent="approver")).duplicate
        [decision] = decisions(await s.rt.store.load(tid))
        assert decision.approved and decision.by == f"email:{ALICE}"

        # Replayed at the next request under a new Message-ID and new threading headers: those are signed.
        tid2, request2 = await approval_requested(s, sink, port, mid="d2@example.com")
        replay = (
            signed.replace(b"<a1@example.com>", b"<a2@example.com>")
            .replace(request["Message-ID"].encode(), request2["Message-ID"].encode())
            .replace(request["Reply-To"].encode(), request2["Reply-To"].encode())
        )
        before = len(sink.to(ALICE))
        assert await send(port, replay, mail_from=ALICE, rcpt=request2["Reply-To"]) == 250
        await eventually(lambda: len(sink.to(ALICE)) == before + 1)
        thread2 = await s.rt.store.load(tid2)
        assert thread2.status == "waiting_approval" and decisions(thread2) == []
        [note] = notes(thread2, "unverified_sender")
        assert "dkim=fail d=example.com" in note.text


async def test_a_forged_authentication_results_header_is_removed_and_decides_nothing(redis_url, prefix, tmp_path):
    async with gateway(redis_url, prefix, tmp_path, email_trusted_authserv_id=RELAY_ID) as (s, sink, port, _):
        tid, request = await approval_requested(s, sink, port)
        # Our relay adds its verdict on top; the sender's forged "pass" with the relay's id sits below it.
        forged = (
            f"Authentication-Results: {RELAY_ID}; dmarc=fail header.from=example.com\n"
            f"Authentication-Results: {RELAY_ID}; dkim=pass header.d=example.com; dmarc=pass header.from=example.com\n"
            "Authentication-Results: other.example; dmarc=pass header.from=example.com\n"
        ) + reply_mail(request, "f2@example.net", "APPROVE", sender=ALICE)
        before = len(sink.to(ALICE))
        assert await send(port, forged, mail_from=MALLORY, rcpt=request["Reply-To"]) == 250
        await eventually(lambda: len(sink.to(ALICE)) == before + 1)
        thread = await s.rt.store.load(tid)
        assert thread.status == "waiting_approval" and decisions(thread) == []
        [note] = notes(thread, "unverified_sender")
        assert f"{RELAY_ID}: dmarc=fail" in note.text
        # What is stored (and all that reads the mail later sees) is the mail without the forged line.
        kept = "".join(line for line in forged.splitlines(keepends=True) if "dkim=pass header.d" not in line)
        blobs = s.rt.channels["email"].blobs
        stored = await blobs.get(blobs.state.ref("raw:" + hashlib.sha256(dkimkit.crlf(kept)).hexdigest()))
        assert stored is not None and stored.count(f"Authentication-Results: {RELAY_ID}".encode()) == 1
        assert b"other.example; dmarc=pass" in stored  # another authserv-id: kept, and believed by no one


async def test_the_relays_header_counts_only_from_the_relay(redis_url, prefix, tmp_path):
    async with gateway(
        redis_url, prefix, tmp_path, email_trusted_authserv_id=RELAY_ID, email_trusted_relays="192.0.2.0/24"
    ) as (s, sink, port, _):
        tid, request = await approval_requested(s, sink, port)
        # Straight to our port from 127.0.0.1, not through the relay: a "pass" on top is the sender's own.
        forged = f"Authentication-Results: {RELAY_ID}; dmarc=pass header.from=example.com\n" + reply_mail(
            request, "f3@example.net", "APPROVE", sender=ALICE
        )
        before = len(sink.to(ALICE))
        assert await send(port, forged, mail_from=MALLORY, rcpt=request["Reply-To"]) == 250
        await eventually(lambda: len(sink.to(ALICE)) == before + 1)
        thread = await s.rt.store.load(tid)
        assert decisions(thread) == [] and len(notes(thread, "unverified_sender")) == 1


async def test_unsigned_mail_answers_questions_unless_the_agent_says_no(redis_url, prefix, tmp_path):
    question_mail = NEW.format(
        a=ALICE, to="echo@frontdesk.localhost", subject="VPN", mid="q1@example.com", reply=ALICE, text="vpn down"
    )
    for allowed in (True, False):
        config = "" if allowed else "[agents.echo]\nunverified_answers = false\n"
        async with gateway(redis_url, f"{prefix}{allowed}", tmp_path, config=config) as (s, sink, port, _):
            assert await send(port, question_mail, mail_from=ALICE, rcpt="echo@frontdesk.localhost") == 250
            await eventually(lambda: sink.to(ALICE))
            question = sink.to(ALICE)[0]
            tid = await s.rt.ingest.thread_for("email", "<q1@example.com>")
            answer = reply_mail(question, "r1@example.com", "since this morning", sender=ALICE)
            assert await send(port, answer, mail_from=ALICE, rcpt=question["Reply-To"]) == 250
            await eventually(lambda: len(sink.to(ALICE)) == 2)
            thread = await s.rt.store.load(tid)
            responses = [e for e in thread.events if e.type == "human_response"]
            if allowed:
                [response] = responses
                assert response.data["auth"]["passed"] is False  # answered, and recorded as unauthenticated
            else:
                assert responses == [] and thread.status == "waiting_human"
                assert len(notes(thread, "unverified_sender")) == 1
                assert "was not taken as an answer" in body(sink.to(ALICE)[1])
