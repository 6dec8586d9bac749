"""Email end to end: real SMTP in, the real worker and outbox, a real aiosmtpd relay out."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import dkimkit
import pytest
from aiosmtpd.smtp import SMTP
from helpers import background, eventually, make_settings
from plugins import ApprovalAgent, EchoAgent

import channels.email as email_channel
from channels.email import tokens
from gateway.events import Contact
from gateway.launch import launch_thread
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.worker import Worker

ALICE = "alice@example.com"
ECHO = "echo@frontdesk.localhost"


@dataclass
class Relay:
    """The outbound relay: a real SMTP server that records mail, or answers DATA as told."""

    mail: list[EmailMessage] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server, session, envelope):
        if self.data_replies:
            return self.data_replies.pop(0)
        self.mail.append(BytesParser(policy=policy.default).parsebytes(envelope.original_content))
        return "250 2.0.0 queued"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.mail if m["To"] == address]


@dataclass
class World:
    rt: object
    relay: Relay
    port: int

    async def write(self, raw: str, *, rcpt: str = ECHO, mail_from: str = ALICE) -> tuple[int, bytes]:
        data = raw.replace("\r\n", "\n").replace("\n", "\r\n").encode()

        def deliver():
            with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=20) as client:
                client.ehlo()
                client.mail(mail_from)
                code, text = client.rcpt(rcpt)
                assert code == 250, (code, text)
                return client.data(data)

        return await asyncio.to_thread(deliver)

    async def status(self, thread_id: str) -> str | None:
        return (await self.rt.store.meta(thread_id)).get("status")

    async def thread_of(self, message_id: str) -> str | None:
        return await self.rt.ingest.thread_for("email", message_id)


@contextlib.asynccontextmanager
async def world(redis_url, prefix, **overrides):
    relay = Relay()
    loop = asyncio.get_running_loop()
    sink = await loop.create_server(lambda: SMTP(relay, hostname="relay.test", loop=loop), "127.0.0.1", 0)
    relay.port = sink.sockets[0].getsockname()[1]
    settings = make_settings(
        redis_url, prefix, smtp_port=0, smtp_relay=f"127.0.0.1:{relay.port}", email_token_secret="flows", **overrides
    )
    try:
        async with running(
            settings, agents=[EchoAgent(), ApprovalAgent()], builtins=False, channels=[email_channel.channel]
        ) as rt:
            channel = rt.channels["email"]
            async with background(Worker(rt, "w1"), Outbox(rt, "o1")) as stop:
                serving = asyncio.create_task(channel.serve(stop))
                await asyncio.wait_for(channel.listening.wait(), 10)
                yield World(rt, relay, channel.port)
            await serving
    finally:
        sink.close()
        await sink.wait_closed()


def new_mail(mid: str, text: str, *, sender: str = ALICE, to: str = ECHO, subject: str = "Printer") -> str:
    return f"From: Alice <{sender}>\nTo: {to}\nSubject: {subject}\nMessage-ID: <{mid}>\nDate: Mon, 3 Jun 2024 10:00:00 +0000\n\n{text}\n"


def gmail_reply(to_mail: EmailMessage, mid: str, text: str, *, sender: str = ALICE, headers: bool = True) -> str:
    """A reply as Gmail writes it: threading headers, the new text, the quote under an attribution."""
    ours = to_mail["Message-ID"]
    refs = f"{to_mail['References'] or ''} {ours}".strip()
    quoted = "\n".join(f"> {line}" for line in to_mail.get_body(("plain",)).get_content().splitlines())
    threading = f"In-Reply-To: {ours}\nReferences: {refs}\n" if headers else ""
    return (
        f"From: Someone <{sender}>\nTo: {to_mail['Reply-To']}\nSubject: Re: {to_mail['Subject']}\nMessage-ID: <{mid}>\n{threading}"
        f"Content-Type: text/plain; charset=utf-8\n\n{text}\n\nOn Mon, Jun 3, 2024 at 10:02 AM echo <{ECHO}> wrote:\n\n{quoted}\n"
    )


async def test_question_reply_answer_thread_in_place(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        assert (await w.write(new_mail("q1@example.com", "my printer is broken")))[0] == 250
        tid = await w.thread_of("<q1@example.com>")
        await eventually(lambda: w.relay.to(ALICE))
        [question] = w.relay.to(ALICE)
        assert question["In-Reply-To"] == "<q1@example.com>"
        assert question["Subject"] == "Re: Printer"
        assert question["Auto-Submitted"] == "auto-replied"
        assert "you said 'my printer is broken'?" in question.get_body(("plain",)).get_content()
        assert tokens.split(question["Reply-To"])[0] == ECHO

        code, _ = await w.write(
            gmail_reply(question, "a1@example.com", "The one on the 4th floor."), rcpt=question["Reply-To"]
        )
        assert code == 250
        await eventually(lambda: len(w.relay.to(ALICE)) == 2)
        assert await w.status(tid) == "done"
        final = w.relay.to(ALICE)[1]
        assert final["In-Reply-To"] == "<a1@example.com>"
        assert final["References"].split() == ["<q1@example.com>", question["Message-ID"], "<a1@example.com>"]
        assert "ok: The one on the 4th floor." in final.get_body(("plain",)).get_content()
        thread = await w.rt.store.load(tid)
        answer = next(e for e in thread.events if e.type == "human_response")
        assert answer.text == "The one on the 4th floor."
        assert "> you said" in answer.full_text  # the whole body stays on the event
        assert answer.sender == f"email:{ALICE}"


async def test_a_reply_with_only_the_token_resumes(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        await w.write(new_mail("q2@example.com", "vpn down"))
        tid = await w.thread_of("<q2@example.com>")
        await eventually(lambda: w.relay.to(ALICE))
        question = w.relay.to(ALICE)[0]
        await w.write(
            gmail_reply(question, "a2@example.com", "since this morning", headers=False), rcpt=question["Reply-To"]
        )
        await eventually(lambda: len(w.relay.to(ALICE)) == 2)
        assert await w.status(tid) == "done"


async def test_a_forged_token_does_not_resume(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        await w.write(new_mail("q3@example.com", "vpn down"))
        tid = await w.thread_of("<q3@example.com>")
        await eventually(lambda: w.relay.to(ALICE))
        question = w.relay.to(ALICE)[0]
        forged = tokens.with_token(ECHO, tokens.mint(b"guessed", tid))
        await w.write(gmail_reply(question, "f3@example.com", "hijack", headers=False), rcpt=forged)
        # Treated as new mail: a thread of its own, which asks its own question.
        other = await w.thread_of("<f3@example.com>")
        assert other and other != tid
        await eventually(lambda: len(w.relay.to(ALICE)) == 2)
        assert await w.status(tid) == "waiting_human"


async def test_a_reply_from_someone_else_is_not_the_answer(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        await w.write(new_mail("q4@example.com", "vpn down"))
        tid = await w.thread_of("<q4@example.com>")
        await eventually(lambda: w.relay.to(ALICE))
        question = w.relay.to(ALICE)[0]
        mallory = "mallory@example.net"
        await w.write(
            gmail_reply(question, "m4@example.net", "ignore that", sender=mallory),
            rcpt=question["Reply-To"],
            mail_from=mallory,
        )
        await eventually(lambda: w.relay.to(mallory))  # told, politely, that the question waits for someone else
        thread = await w.rt.store.load(tid)
        assert thread.status == "waiting_human"
        assert any(e.type == "note" and e.kind == "refused" and e.sender == f"email:{mallory}" for e in thread.events)


async def test_approval_by_mail(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        await w.write(
            new_mail("d1@example.com", "1.4.2", to="approver@frontdesk.localhost", subject="Deploy"),
            rcpt="approver@frontdesk.localhost",
        )
        tid = await w.thread_of("<d1@example.com>")
        await eventually(lambda: w.relay.to(ALICE))
        request = w.relay.to(ALICE)[0]
        body = request.get_body(("plain",)).get_content()
        assert "Approval needed: deploy(version='1.4.2')" in body and "Reply APPROVE or DENY on the first line" in body
        # Only mail whose From is authenticated decides: Alice's domain signs it (DKIM), as Gmail would.
        key, dns = dkimkit.new_key(), dkimkit.Dns()
        dns.publish("example.com", key)
        w.rt.channels["email"].inbound.auth.resolver = dns
        approve = dkimkit.sign(
            dkimkit.crlf(gmail_reply(request, "d2@example.com", "APPROVE\n\nLooks good to me.")), "example.com", key
        )
        await w.write(approve.decode(), rcpt=request["Reply-To"])
        await eventually(lambda: len(w.relay.to(ALICE)) == 3)  # the receipt and the final answer
        thread = await w.rt.store.load(tid)
        decision = next(e for e in thread.events if e.type == "approval_decision")
        assert decision.approved and decision.comment == "Looks good to me." and decision.by == f"email:{ALICE}"
        assert thread.status == "done"
        texts = [m.get_body(("plain",)).get_content() for m in w.relay.to(ALICE)[1:]]
        assert any(t.startswith(f"Approved by email:{ALICE}") for t in texts)
        assert any("approved by email:" in t for t in texts)


@pytest.mark.parametrize(
    "headers, mail_from",
    [
        ("Auto-Submitted: auto-replied\nSubject: Out of office\n", ALICE),
        ("Return-Path: <>\nSubject: Undelivered Mail Returned to Sender\n", "<>"),
        ("Precedence: bulk\nSubject: newsletter\n", ALICE),
    ],
)
async def test_automatic_replies_get_no_answer(redis_url, prefix, headers, mail_from):
    async with world(redis_url, prefix) as w:
        await w.write(new_mail("q5@example.com", "vpn down"))
        tid = await w.thread_of("<q5@example.com>")
        await eventually(lambda: w.relay.to(ALICE))
        question = w.relay.to(ALICE)[0]
        auto = f"From: {ALICE}\nTo: {ECHO}\n{headers}Message-ID: <auto5@example.com>\nIn-Reply-To: {question['Message-ID']}\n\nI am away.\n"
        assert (await w.write(auto, mail_from=mail_from))[0] == 250
        # Accepted, yet nothing reached the stream: the 250 is given only after enqueueing.
        rows = await w.rt.redis.xrange(w.rt.keys.inbound(0))
        assert not any("auto5@example.com" in fields.get("d", "") for _, fields in rows)
        # The thread still waits for the person, whose real reply is then the answer.
        await w.write(gmail_reply(question, "a5@example.com", "back now"), rcpt=question["Reply-To"])
        await eventually(lambda: len(w.relay.to(ALICE)) == 2)
        thread = await w.rt.store.load(tid)
        assert [e.text for e in thread.events if e.type == "human_response"] == ["back now"]


async def test_a_launched_thread_mails_its_contact_and_the_reply_resumes_it(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        bob = "bob@example.com"
        thread = await launch_thread(w.rt, "echo", "check the backups", Contact(channel="email", address=bob))
        await eventually(lambda: w.relay.to(bob))
        [question] = w.relay.to(bob)
        assert question["Subject"] == "A question from echo"
        assert question["In-Reply-To"] is None
        assert question["From"].addresses[0].addr_spec == ECHO
        await w.write(
            gmail_reply(question, "b1@example.com", "all green", sender=bob), rcpt=question["Reply-To"], mail_from=bob
        )
        await eventually(lambda: len(w.relay.to(bob)) == 2)
        assert await w.status(thread.id) == "done"
        final = w.relay.to(bob)[1]
        assert final["In-Reply-To"] == "<b1@example.com>" and final["Subject"] == "Re: A question from echo"


async def test_a_permanent_relay_refusal_fails_the_thread_and_is_dead_lettered(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        w.relay.data_replies.append("554 5.7.1 rejected")
        await w.write(new_mail("p1@example.com", "hello"))
        tid = await w.thread_of("<p1@example.com>")
        await eventually(lambda: _status_is(w, tid, "failed"))
        thread = await w.rt.store.load(tid)
        delivery = next(e for e in thread.events if e.type == "delivery")
        assert delivery.status == "failed" and "554" in delivery.detail
        dead = await w.rt.streams.dlq_entries()
        assert len(dead) == 1 and "554" in dead[0][2]["reason"]


async def test_a_temporary_relay_refusal_is_retried(redis_url, prefix):
    async with world(redis_url, prefix) as w:
        w.relay.data_replies.extend(["451 4.3.0 try again", "421 4.7.0 busy"])
        await w.write(new_mail("t1@example.com", "hello"))
        tid = await w.thread_of("<t1@example.com>")
        await eventually(lambda: w.relay.to(ALICE))
        await eventually(lambda: _delivered(w, tid))
        assert len(w.relay.to(ALICE)) == 1


async def _status_is(w: World, tid: str, status: str) -> bool:
    return await w.status(tid) == status


async def _delivered(w: World, tid: str) -> bool:
    thread = await w.rt.store.load(tid)
    return any(e.type == "delivery" and e.status == "sent" for e in thread.events)
