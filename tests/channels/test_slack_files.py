"""Files both ways against the fake Slack: inbound files fetched with the bot token under a cap,
long answers uploaded with files.getUploadURLExternal + files.completeUploadExternal."""

from __future__ import annotations

import pytest
from fake_slack import RESET, SECRET, TEAM, TOKEN, FakeSlack, message
from helpers import eventually, make_settings
from plugins import EchoAgent
from slack_live import live

import channels.slack as slack
from gateway.errors import DeliveryFailed
from gateway.events import Attachment, InboundMessage, OutboundMessage
from gateway.runtime import running

THREAD_TS = "1700000000.000100"
DM = "D1"


@pytest.fixture
async def fake():
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def rt(redis_url, prefix, fake, monkeypatch):
    monkeypatch.setenv("FRONTDESK_SLACK_FILE_MAX_BYTES", "1000")
    monkeypatch.setenv("FRONTDESK_SLACK_UPLOAD_OVER", "2000")
    settings = make_settings(
        redis_url,
        prefix,
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=fake.url,
        default_agent="echo",
    )
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[slack.channel]) as rt:
        yield rt


def inbound(*files: Attachment) -> InboundMessage:
    return InboundMessage(
        id="Ev1",
        channel="slack",
        conversation=f"{TEAM}/{DM}",
        sender="U1",
        text="see attached",
        attachments=list(files),
    )


def listed(file: dict) -> Attachment:
    return Attachment(filename=file["name"], content_type=file["mimetype"], size=file["size"], ref=file["url_private"])


# ---------------------------------------------------------------- in


async def test_a_file_on_a_message_reaches_the_agent_as_a_stored_attachment(redis_url, prefix, monkeypatch):
    async with live(redis_url, prefix, EchoAgent()) as gw:
        file = gw.fake.host_file("notes.txt", b"the printer is on fire")
        event = message("see attached", ts="1720000001.000100", channel=DM, subtype="file_share", files=[file])
        await gw.event(event, "Ev1")
        thread = await eventually(lambda: gw.thread(f"{TEAM}/{DM}"))
        [attachment] = thread.events[0].attachments
        assert attachment.filename == "notes.txt" and attachment.size == 22 and attachment.sha256
        channel = gw.rt.channels["slack"]
        assert await channel.files.blobs.get(attachment.ref) == b"the printer is on fire"
        assert gw.fake.downloads == [f"Bearer {TOKEN}"]  # fetched with the bot token, once


async def test_a_file_over_the_cap_is_listed_but_not_fetched(rt, fake):
    channel = rt.channels["slack"]
    big = fake.host_file("big.bin", b"x" * 1001, "application/octet-stream")
    liar = fake.host_file("liar.bin", b"y" * 1001, "application/octet-stream", size=10)  # says 10, sends 1001
    done = await channel.complete(inbound(listed(big), listed(liar)))
    assert [(a.filename, a.ref) for a in done.attachments] == [("big.bin", ""), ("liar.bin", "")]
    assert fake.downloads == [f"Bearer {TOKEN}"]  # only the liar was asked for, and its bytes dropped


async def test_the_token_goes_to_no_other_host(rt, fake):
    channel = rt.channels["slack"]
    elsewhere = Attachment(filename="x.txt", content_type="text/plain", size=3, ref="https://evil.invalid/x.txt")
    done = await channel.complete(inbound(elsewhere))
    assert done.attachments[0].ref == "" and fake.downloads == []


async def test_a_file_slack_will_not_give_is_listed_without_a_ref(rt, fake):
    channel = rt.channels["slack"]
    file = fake.host_file("gone.txt", b"abc")
    fake.hosted.clear()  # deleted at Slack meanwhile: 404
    done = await channel.complete(inbound(listed(file)))
    assert done.attachments[0].ref == ""


async def test_a_message_without_files_is_left_as_it_is(rt):
    message_ = inbound()
    assert await rt.channels["slack"].complete(message_) is message_


# ---------------------------------------------------------------- out


def long_answer(text: str) -> OutboundMessage:
    return OutboundMessage(
        id="th_f-6",
        thread_id="th_f",
        agent="helpdesk",
        channel="slack",
        address="U1",
        reply_to={"team": TEAM, "channel": "C1", "thread_ts": THREAD_TS},
        text=text,
        kind="final",
    )


LONG = "\n".join(f"line {i}: " + "detail " * 8 for i in range(60))  # about 3,800 characters


async def test_a_long_answer_is_uploaded_as_a_file_in_its_thread(rt, fake):
    sent = await rt.channels["slack"].send(long_answer(LONG))
    [ticket] = fake.to("files.getUploadURLExternal")
    assert ticket["filename"] == "final-th_f-6.md" and int(ticket["length"]) == len(LONG.encode())
    upload = fake.uploads[sent.detail]
    assert upload["data"] == LONG.encode()
    assert upload["shared"] == "C1" and upload["thread_ts"] == THREAD_TS
    assert upload["comment"].startswith("line 0:") and upload["comment"].endswith("the whole answer is in the file.")
    assert fake.to("chat.postMessage", ok=None) == []  # one share instead of many parts


async def test_an_upload_shared_once_is_not_shared_again_on_a_retry(rt, fake):
    channel = rt.channels["slack"]
    first = await channel.send(long_answer(LONG))
    again = await channel.send(long_answer(LONG))
    assert again.detail == first.detail
    assert len(fake.to("files.completeUploadExternal")) == 1


async def test_a_lost_answer_to_the_share_is_ambiguous(rt, fake):
    fake.script("files.completeUploadExternal", RESET)
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["slack"].send(long_answer(LONG))
    assert failed.value.ambiguous and not failed.value.retryable


async def test_a_short_answer_is_posted_as_before(rt, fake):
    await rt.channels["slack"].send(long_answer("short"))
    assert fake.to("files.getUploadURLExternal", ok=None) == []
    assert fake.posts(text="short")


async def test_a_file_slack_cannot_serve_now_does_not_hold_the_message_back(rt, fake):
    channel = rt.channels["slack"]
    file = fake.host_file("busy.txt", b"abc")
    broken = listed(file).model_copy(
        update={"ref": file["url_private"].replace(str(fake.port), "1")}
    )  # nothing listens
    done = await channel.complete(inbound(broken))
    assert done.attachments[0].ref == "" and done.attachments[0].filename == "busy.txt"


async def test_a_long_question_with_choices_is_posted_not_uploaded(rt, fake):
    question = long_answer(LONG).model_copy(update={"kind": "question", "choices": ["yes", "no"]})
    await rt.channels["slack"].send(question)
    assert fake.to("files.getUploadURLExternal", ok=None) == []
    assert "yes" in fake.posts()[-1]["text"]
