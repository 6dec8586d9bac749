"""From accepted mail to what the worker hands the router: conversations and the full read."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import make_settings
from test_email_server import TO, corpus, crlf, entries, message, serving, smtp

from channels.email import tokens
from gateway.errors import Malformed
from gateway.events import Contact, InboundMessage, Thread

OURS = "<th_0190000000000000000000-1@frontdesk.localhost>"


@pytest.fixture
async def server(redis_url, prefix):
    settings = make_settings(redis_url, prefix, smtp_port=0, email_token_secret="k", email_attachment_max_bytes=80)
    async with serving(settings) as pair:
        yield pair


async def received(rt, channel, raw: bytes, **kw) -> InboundMessage:
    reply = await smtp(channel.port, raw, **kw)
    assert reply["data"][0] == 250, reply
    return InboundMessage.model_validate((await entries(rt))[-1])


async def test_a_reply_to_our_message_id_joins_its_thread(server):
    rt, channel = server
    await rt.ingest.bind("email", OURS, "th_known")
    raw = message("r1@example.com", extra=f"In-Reply-To: {OURS}\nReferences: <root@example.com> {OURS}\n")
    msg = await received(rt, channel, raw)
    assert msg.conversation == OURS
    assert msg.reply_to["references"] == ["<root@example.com>", OURS]
    assert msg.reply_to["message_id"] == "<r1@example.com>"


async def test_the_newest_known_ancestor_wins(server):
    rt, channel = server
    await rt.ingest.bind("email", "<old@frontdesk.localhost>", "th_old")
    await rt.ingest.bind("email", "<new@frontdesk.localhost>", "th_new")
    raw = message(
        "r2@example.com",
        extra="In-Reply-To: <theirs@example.com>\nReferences: <old@frontdesk.localhost> <new@frontdesk.localhost> <theirs@example.com>\n",
    )
    assert (await received(rt, channel, raw)).conversation == "<new@frontdesk.localhost>"


async def test_new_mail_is_keyed_by_its_root(server):
    rt, channel = server
    raw = message("r3@example.com", extra="References: <a@example.com> <b@example.com>\n")
    assert (await received(rt, channel, raw)).conversation == "<a@example.com>"
    assert (await received(rt, channel, message("r4@example.com"))).conversation == "<r4@example.com>"


async def _thread(rt) -> str:
    tid = rt.keys.new_thread_id()
    thread = Thread(id=tid, agent="echo", origin=Contact(channel="email", address="alice@example.com"))
    assert await rt.store.create(thread)
    return tid


async def test_a_genuine_reply_token_finds_the_thread_without_headers(server):
    rt, channel = server
    tid = await _thread(rt)
    address = tokens.with_token(TO, tokens.mint(b"k", tid))
    msg = await received(rt, channel, message("t1@example.com"), rcpts=[address])
    assert msg.conversation == f"thread/{tid}"
    assert await rt.ingest.thread_for("email", msg.conversation) == tid
    assert msg.address == TO


async def test_a_forged_token_is_ignored(server):
    rt, channel = server
    tid = await _thread(rt)
    forged = tokens.with_token(TO, tokens.mint(b"not-the-key", tid))
    msg = await received(rt, channel, message("t2@example.com"), rcpts=[forged])
    assert msg.conversation == "<t2@example.com>"  # new mail, not a resume


async def test_complete_reads_body_and_stores_attachments(server):
    rt, channel = server
    msg = await received(rt, channel, corpus("nested_multipart.eml"))
    assert msg.text == ""  # nothing but headers before the 250
    done = await channel.complete(msg)
    assert done.text == "Hi, please check the attached invoice and résumé.\nThe logo is inline."
    logo, invoice, resume = done.attachments
    assert (invoice.filename, invoice.content_type) == ("invoice-2024-06.pdf", "application/pdf")
    data = await channel.blobs.get(invoice.ref)
    assert data.startswith(b"%PDF") and hashlib.sha256(data).hexdigest() == invoice.sha256 and len(data) == invoice.size
    assert logo.content_type == "image/png" and logo.ref
    # Over FRONTDESK_EMAIL_ATTACHMENT_MAX_BYTES (80 here): listed, not stored.
    assert resume.filename == "résumé.pdf" and resume.size == 83 and resume.ref == "" and resume.sha256
    assert done.data["subject"] == "Invoice question – résumé attached"
    assert json.loads(done.model_dump_json())  # the event stays plain JSON


async def test_complete_gives_the_new_text_and_keeps_the_full_body(server):
    rt, channel = server
    done = await channel.complete(await received(rt, channel, corpus("outlook_reply.eml")))
    assert done.text == "APPROVE\n\nThat’s fine, go ahead with 1.4.2.\n\nBob"
    assert "From: helpdesk <helpdesk@frontdesk.localhost>" in done.full_text


async def test_an_empty_body_gives_the_subject(server):
    rt, channel = server
    done = await channel.complete(
        await received(rt, channel, crlf(b"From: a@example.com\nSubject: VPN is down\nMessage-ID: <e@x>\n\n"))
    )
    assert done.text == "VPN is down"


async def test_a_bounce_found_only_by_the_full_parse_is_dropped(server):
    rt, channel = server
    msg = await received(rt, channel, corpus("wrapped_bounce.eml"))
    assert await channel.complete(msg) is None


async def test_malformed_mail_completes_with_what_could_be_read(server):
    rt, channel = server
    done = await channel.complete(await received(rt, channel, corpus("malformed_headers.eml")))
    assert done.text.startswith("Hello, my vpn is broken.")
    assert done.data["problems"]


async def test_raw_mail_gone_is_malformed(server):
    rt, channel = server
    msg = await received(rt, channel, message("gone@example.com"))
    await rt.redis.delete(msg.data["raw"])
    with pytest.raises(Malformed):
        await channel.complete(msg)
