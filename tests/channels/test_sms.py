"""channels/sms against a real Redis and a fake Twilio on loopback.

Inbound requests are signed with the twilio package's own algorithm; outbound
calls go through the package's async client to the fake, which records them.
"""

from __future__ import annotations

import socket

import httpx
import pytest
from fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, Reply, sign
from helpers import make_settings
from helpers import stream_entries as entries
from plugins import EchoAgent

import channels.sms as sms
from channels.twilio.text import APPROVAL_HINT, render, segments, units
from gateway.errors import DeliveryFailed, Malformed, TooLarge
from gateway.events import Contact, OutboundMessage, Thread
from gateway.runtime import running
from gateway.web.app import create_app

PUBLIC = "https://frontdesk.example.com"
THEM, US, FROM = "+15551230001", "+15559870000", "+15550000042"


@pytest.fixture
async def fake():
    async with FakeTwilio() as fake:
        yield fake


def sms_settings(redis_url, prefix, fake, **overrides):
    values = dict(
        default_agent="echo",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=fake.url,
        twilio_from_number=FROM,
        public_url=PUBLIC,
    )
    values.update(overrides)
    return make_settings(redis_url, prefix, **values)


@pytest.fixture
async def rt(redis_url, prefix, fake):
    async with running(
        sms_settings(redis_url, prefix, fake), agents=[EchoAgent()], builtins=False, channels=[sms.channel]
    ) as rt:
        yield rt


@pytest.fixture
async def client(rt):
    app = create_app(rt.settings, rt)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000") as client:
        yield client


def inbound(sid: str, body: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": THEM,
        "To": US,
        "Body": body,
        "NumMedia": "0",
        **extra,
    }


async def post(
    client, path: str, params: dict[str, str], *, signed_for: str | None = None, signature: str | None = None
):
    url = signed_for or PUBLIC + path
    headers = {"X-Twilio-Signature": signature if signature is not None else sign(url, params)}
    return await client.post(path, data=params, headers=headers)


def outbound(
    text: str, *, kind: str = "question", reply_to: dict | None = None, address: str = THEM, i: int = 1, **kw
) -> OutboundMessage:
    return OutboundMessage(
        id=f"th_test-{i}",
        thread_id="th_test",
        channel="sms",
        address=address,
        reply_to=reply_to or {},
        text=text,
        kind=kind,
        **kw,
    )


# ---------------------------------------------------------------- text


def test_plain_text_strips_markdown():
    md = "# Plan\n\n**Bold** and *it* and `code`, snake_case_name, 2 * 3.\n\n* one\n* two\n\nSee [the docs](https://x.example/d).\n\n```\nls -l\n```"
    assert (
        render(outbound(md))
        == "Plan\n\nBold and it and code, snake_case_name, 2 * 3.\n\n- one\n- two\n\nSee the docs (https://x.example/d).\n\nls -l"
    )


# What a phone shows: no markup characters, links as "label (url)", bullets in GSM-7.
SMS_TEXT = [
    ("**bold** _it_ ~~old~~ `x < y`", "bold it old x < y"),
    ("***both*** and **_nested_ bold**", "both and nested bold"),
    ("a [label](https://a.test/p?q=1&r=2) b", "a label (https://a.test/p?q=1&r=2) b"),
    ("<https://a.test/x> and <someone@a.test>", "https://a.test/x and someone@a.test"),
    ("[https://a.test](https://a.test)", "https://a.test"),
    ("![a chart](https://a.test/c.png)", "a chart (https://a.test/c.png)"),
    ("1. first\n2. second\n   - inner", "1. first\n2. second\n   - inner"),
    ("* one\n+ two", "- one\n- two"),  # two lists to the parser (the marker changed), no blank line between
    ("> quoted\n> still", "quoted\nstill"),
    ("## Heading ##\ntext", "Heading\ntext"),
    ("line one\nline two", "line one\nline two"),
    ("above\n\n---\n\nbelow", "above\n\nbelow"),
    ("| a | b |\n|---|---|\n| 1 | 2 |", "a | b\n1 | 2"),
    ("2*3*4 is 24", "234 is 24"),  # CommonMark: `*3*` is emphasis even inside a word; `_` is not
    ("snake_case_name and __init__", "snake_case_name and init"),
    # Hostile or broken input: shown as written, never half-parsed.
    ("**unclosed bold and `unclosed code", "**unclosed bold and `unclosed code"),
    ("<b>html</b> &amp; <script>x()</script>", "<b>html</b> & <script>x()</script>"),
    ("[click](javascript:alert(1))", "[click](javascript:alert(1))"),
    ("[rel](/relative/path)", "[rel](/relative/path)"),
    ("```python\nprint('*not* markup')\n", "print('*not* markup')"),  # a fence left open runs to the end
    ("\\*escaped\\*", "*escaped*"),
    ("", ""),
]


@pytest.mark.parametrize("markdown, text", SMS_TEXT, ids=[m[:30] for m, _ in SMS_TEXT])
def test_markdown_as_sms_text(markdown, text):
    assert render(outbound(markdown, kind="final")) == text


def test_very_long_hostile_markdown_renders_whole_and_segments_fit():
    md = "[" * 5000 + "**x " * 5000 + ">" * 200 + " deep\n" + "- " * 300 + "item"
    text = render(outbound(md, kind="final"))
    assert text.count("x") == 5000 and "deep" in text and text.endswith("item")
    parts = segments(text)
    assert len(parts) > 1 and all(units(p) <= 1600 for p in parts)


def test_segments_fit_the_limit_and_keep_the_order():
    words = [f"word{i}" for i in range(800)]
    parts = segments(" ".join(words))
    assert len(parts) == 4
    assert all(units(p) <= 1600 for p in parts)
    assert [p.split(" ", 1)[0] for p in parts] == ["(1/4)", "(2/4)", "(3/4)", "(4/4)"]
    assert " ".join(p.split(" ", 1)[1] for p in parts).split() == words  # split at spaces, nothing lost
    assert segments("short") == ["short"]


def test_segments_without_whitespace_and_with_astral_characters():
    parts = segments("x" * 4000)
    assert all(units(p) <= 1600 for p in parts) and "".join(p.split(" ", 1)[1] for p in parts) == "x" * 4000
    emoji = segments("😀" * 1000)  # two UTF-16 units each, as Twilio counts them
    assert all(units(p) <= 1600 for p in emoji) and "".join(p.split(" ", 1)[1] for p in emoji) == "😀" * 1000


def test_render_says_how_to_answer():
    assert render(outbound("Approval needed: deploy(version='1.2')", kind="approval")).endswith("\n\n" + APPROVAL_HINT)
    assert (
        render(outbound("Which size?", choices=["small", "large"])) == "Which size?\n\nReply with one of: small, large"
    )
    assert render(outbound("**done**", kind="final")) == "done"


async def test_the_channel_needs_twilio_credentials(redis_url, prefix, fake):
    settings = sms_settings(redis_url, prefix, fake, twilio_auth_token=None)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[sms.channel]) as rt:
        assert "sms" not in rt.channels and rt.unconfigured == {"sms": "no Twilio account: TWILIO_AUTH_TOKEN not set"}


# ---------------------------------------------------------------- inbound


async def test_an_incoming_message_is_enqueued_and_answered_with_empty_twiml(rt, client):
    params = inbound(
        "SM1",
        "hello",
        NumMedia="2",
        MediaUrl0=f"{PUBLIC}/m0",
        MediaContentType0="image/jpeg",
        MediaUrl1=f"{PUBLIC}/m1",
        MediaContentType1="application/pdf",
    )
    r = await post(client, "/twilio/sms", params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    assert r.text.endswith("<Response />")
    [entry] = await entries(rt, "inbound")
    assert entry.agent == "echo"
    data = entry.data
    assert (data["id"], data["channel"], data["conversation"]) == ("SM1", "sms", f"{THEM}/{US}")
    assert (data["sender"], data["address"], data["text"]) == (THEM, US, "hello")
    assert data["reply_to"] == {"to": THEM, "from": US}
    assert [(a["ref"], a["content_type"]) for a in data["attachments"]] == [
        (f"{PUBLIC}/m0", "image/jpeg"),
        (f"{PUBLIC}/m1", "application/pdf"),
    ]


@pytest.mark.parametrize(
    "how",
    ["forged", "missing", "other_token", "tampered_body", "signed_for_internal_url"],
)
async def test_a_bad_signature_is_403_and_nothing_is_enqueued(rt, client, how):
    params = inbound("SMbad", "hello")
    url = PUBLIC + "/twilio/sms"
    signature = {
        "forged": "bm90IGEgc2lnbmF0dXJl",
        "missing": "",
        "other_token": sign(url, params, token="not-our-token"),
        "tampered_body": sign(url, {**params, "Body": "something else"}),
        # Behind a proxy, Twilio signs the public URL, never the one we were reached on.
        "signed_for_internal_url": sign("http://internal:8000/twilio/sms", params),
    }[how]
    r = await post(client, "/twilio/sms", params, signature=signature)
    assert r.status_code == 403
    assert await entries(rt) == []


async def test_without_a_public_url_the_request_url_is_what_twilio_signed(redis_url, prefix, fake):
    settings = sms_settings(redis_url, prefix, fake, public_url=None)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[sms.channel]) as rt:
        transport = httpx.ASGITransport(app=create_app(settings, rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://internal:8000") as client:
            r = await post(client, "/twilio/sms", inbound("SMx", "hi"), signed_for="http://internal:8000/twilio/sms")
            assert r.status_code == 200
            assert len(await entries(rt, "inbound")) == 1


async def test_a_duplicate_message_sid_is_answered_alike_and_enqueued_once(rt, client):
    first = await post(client, "/twilio/sms", inbound("SMdup", "hello"))
    again = await post(client, "/twilio/sms", inbound("SMdup", "hello"))
    assert first.status_code == again.status_code == 200
    assert first.text == again.text
    assert len(await entries(rt, "inbound")) == 1


async def test_stop_records_the_opt_out_and_nothing_is_sent_until_start(rt, client, fake):
    channel = rt.channels["sms"]
    r = await post(client, "/twilio/sms", inbound("SMstop", "  Stop "))
    assert r.status_code == 200 and r.text.endswith("<Response />")
    assert await entries(rt) == []  # never reaches an agent
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(outbound("are you there?", reply_to={"to": THEM, "from": US}))
    assert "opted out" in str(failed.value) and not failed.value.retryable and not failed.value.ambiguous
    assert fake.calls == []
    await post(client, "/twilio/sms", inbound("SMstart", "START"))
    await channel.send(outbound("welcome back", reply_to={"to": THEM, "from": US}))
    assert [m["Body"] for m in fake.messages] == ["welcome back"]
    assert await entries(rt) == []


@pytest.mark.parametrize("word", ["STOPALL", "unsubscribe", "Cancel", "END", "quit"])
async def test_every_opt_out_keyword_counts(rt, client, word):
    await post(client, "/twilio/sms", inbound("SMkw", word))
    assert await rt.channels["sms"].optouts.has(THEM)


async def test_yes_opts_back_in_only_a_number_that_opted_out(rt, client):
    channel = rt.channels["sms"]
    await post(client, "/twilio/sms", inbound("SMy1", "yes"))
    assert [e.data["text"] for e in await entries(rt, "inbound")] == ["yes"]  # an ordinary answer
    await post(client, "/twilio/sms", inbound("SMs", "STOP"))
    await post(client, "/twilio/sms", inbound("SMy2", "YES"))
    assert not await channel.optouts.has(THEM)
    assert len(await entries(rt, "inbound")) == 1


async def test_help_answers_with_the_configured_text(rt, client):
    r = await post(client, "/twilio/sms", inbound("SMhelp", "help"))
    assert r.status_code == 200
    assert f"<Message>{rt.settings.sms_help_text}</Message>" in r.text
    assert await entries(rt) == []
    await post(client, "/twilio/sms", inbound("SMnot", "stop my order"))
    assert [e.data["text"] for e in await entries(rt, "inbound")] == ["stop my order"]  # not the whole message


# ---------------------------------------------------------------- outbound


async def test_a_reply_goes_from_the_number_they_wrote_to_with_a_status_callback(rt, fake):
    sent = await rt.channels["sms"].send(outbound("**Hi** there", reply_to={"to": THEM, "from": US}))
    [call] = fake.calls
    assert call["authorized"] and call["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    message = fake.messages[0]
    assert (message["To"], message["From"], message["Body"]) == (THEM, US, "Hi there")
    assert message["StatusCallback"] == f"{PUBLIC}/twilio/status?o=th_test-1&t=th_test"
    assert sent.detail == message["Sid"]
    assert sent.conversation == f"{THEM}/{US}" and sent.reply_to == {"to": THEM, "from": US}


async def test_a_message_to_a_contact_goes_from_the_configured_number_and_opens_the_conversation(rt, fake):
    sent = await rt.channels["sms"].send(outbound("Morning check", address=THEM))
    assert (fake.messages[0]["To"], fake.messages[0]["From"]) == (THEM, FROM)
    assert sent.conversation == f"{THEM}/{FROM}" and sent.reply_to == {"to": THEM, "from": FROM}


async def test_a_messaging_service_sends_when_configured(redis_url, prefix, fake):
    settings = sms_settings(
        redis_url, prefix, fake, twilio_from_number=None, twilio_messaging_service_sid="MG" + "1" * 32
    )
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[sms.channel]) as rt:
        await rt.channels["sms"].send(outbound("via the pool", address=THEM))
        await rt.channels["sms"].send(outbound("a reply", reply_to={"to": THEM, "from": US}, i=2))
    first, reply = fake.messages
    assert first["MessagingServiceSid"] == "MG" + "1" * 32 and "From" not in first
    assert reply["From"] == US and reply["MessagingServiceSid"] == "MG" + "1" * 32


async def test_a_number_that_is_not_e164_is_refused_without_calling_twilio(rt, fake):
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["sms"].send(outbound("hi", address="555-1234"))
    assert not failed.value.retryable and fake.calls == []


@pytest.mark.parametrize(
    "status, code, retry_after, retryable",
    [
        (429, 20429, "7", True),
        (500, 20500, None, True),
        (503, 20503, None, True),
        (400, 21211, None, False),  # invalid 'To' number
        (400, 21408, None, False),  # region not enabled
    ],
)
async def test_twilio_errors_map_to_delivery_failures(rt, fake, status, code, retry_after, retryable):
    fake.fail_next(status, code, "scripted failure", retry_after)
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["sms"].send(outbound("hi", reply_to={"to": THEM, "from": US}))
    exc = failed.value
    assert (exc.status, exc.retryable, exc.ambiguous) == (status, retryable, False)
    assert exc.retry_after == (7.0 if retry_after else None)
    assert str(code) in str(exc)


async def test_an_unsubscribed_recipient_is_recorded_as_opted_out(rt, fake):
    fake.fail_next(400, 21610, "Attempt to send to unsubscribed recipient")
    channel = rt.channels["sms"]
    with pytest.raises(DeliveryFailed) as failed:
        await channel.send(outbound("hi", reply_to={"to": THEM, "from": US}))
    assert not failed.value.retryable
    assert await channel.optouts.has(THEM)


async def test_no_answer_is_ambiguous(redis_url, prefix, fake):
    settings = sms_settings(redis_url, prefix, fake, twilio_timeout=0.3)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[sms.channel]) as rt:
        fake.answer_next(Reply(hang=True))
        with pytest.raises(DeliveryFailed) as failed:
            await rt.channels["sms"].send(outbound("hi", reply_to={"to": THEM, "from": US}))
        assert failed.value.ambiguous and not rt.channels["sms"].resend_safe


async def test_an_unreachable_api_is_retryable(redis_url, prefix, fake):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    settings = sms_settings(redis_url, prefix, fake, twilio_api_url=closed)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[sms.channel]) as rt:
        with pytest.raises(DeliveryFailed) as failed:
            await rt.channels["sms"].send(outbound("hi", reply_to={"to": THEM, "from": US}))
        assert failed.value.retryable and not failed.value.ambiguous


async def test_a_long_message_goes_in_order_and_a_retry_skips_the_segments_that_went(rt, fake):
    text = " ".join(f"w{i:04d}" for i in range(700))  # 3,499 characters: three segments
    message = outbound(text, reply_to={"to": THEM, "from": US})
    fake.answer_next(Reply(), Reply(status=503, code=20503, message="Service Unavailable"))
    with pytest.raises(DeliveryFailed):
        await rt.channels["sms"].send(message)
    assert [m["Body"][:6] for m in fake.messages] == ["(1/3) "]
    sent = await rt.channels["sms"].send(message.model_copy(update={"attempt": 1}))
    bodies = [m["Body"] for m in fake.messages]
    assert [b[:6] for b in bodies] == ["(1/3) ", "(2/3) ", "(3/3) "]
    assert " ".join(b[6:] for b in bodies) == text
    assert sent.detail == ",".join(m["Sid"] for m in fake.messages)


# ---------------------------------------------------------------- status callbacks


async def _thread(rt) -> str:
    thread = Thread(id=rt.keys.new_thread_id(), agent="echo", origin=Contact(channel="sms", address=THEM))
    await rt.store.create(thread)
    return thread.id


async def _sent_to_fake(rt, fake, thread_id: str) -> dict[str, str]:
    message = OutboundMessage(
        id=f"{thread_id}-1",
        thread_id=thread_id,
        channel="sms",
        address=THEM,
        reply_to={"to": THEM, "from": US},
        text="hi",
    )
    await rt.channels["sms"].send(message)
    return fake.messages[-1]


async def _callback(
    client, message: dict[str, str], status: str, error_code: int | None = None, signature: str | None = None
):
    path = message["StatusCallback"].removeprefix(PUBLIC)
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": message["Sid"],
        "MessageStatus": status,
        "To": message["To"],
        "From": message["From"],
    }
    if error_code:
        params["ErrorCode"] = str(error_code)
    return await post(client, path, params, signed_for=message["StatusCallback"], signature=signature)


async def test_status_callbacks_become_delivery_entries_once_each(rt, client, fake):
    thread_id = await _thread(rt)
    message = await _sent_to_fake(rt, fake, thread_id)
    for status in ("queued", "sent", "delivered", "delivered"):
        assert (await _callback(client, message, status)).status_code == 204
    found = await entries(rt, "delivery")
    assert [e.data["status"] for e in found] == ["queued", "sent", "delivered"]
    assert {e.thread_id for e in found} == {thread_id}
    assert {(e.data["outbound_id"], e.data["channel"], e.data["detail"]) for e in found} == {
        (f"{thread_id}-1", "sms", message["Sid"])
    }


async def test_a_failed_delivery_carries_twilios_error_code(rt, client, fake):
    thread_id = await _thread(rt)
    message = await _sent_to_fake(rt, fake, thread_id)
    await _callback(client, message, "undelivered", 30003)
    [entry] = await entries(rt, "delivery")
    assert (
        entry.data["status"] == "failed" and "30003" in entry.data["detail"] and "undelivered" in entry.data["detail"]
    )


async def test_a_status_callback_with_a_bad_signature_is_403(rt, client, fake):
    message = await _sent_to_fake(rt, fake, await _thread(rt))
    r = await _callback(
        client, message, "delivered", signature=sign(PUBLIC + "/twilio/status", {"MessageSid": message["Sid"]})
    )
    assert r.status_code == 403
    assert await entries(rt, "delivery") == []


async def test_a_status_callback_for_an_unknown_thread_records_nothing(rt, client, fake):
    message = await _sent_to_fake(rt, fake, "th_gone")
    assert (await _callback(client, message, "delivered")).status_code == 204
    assert await entries(rt, "delivery") == []


async def test_an_unsubscribed_error_in_a_callback_records_the_opt_out(rt, client, fake):
    message = await _sent_to_fake(rt, fake, await _thread(rt))
    await _callback(client, message, "failed", 21610)
    assert await rt.channels["sms"].optouts.has(THEM)


# ---------------------------------------------------------------- media


async def test_media_is_fetched_with_the_account_credentials(rt, fake):
    url = fake.add_media(b"\x89PNG" + b"\0" * 1000, "image/png")
    media = await rt.channels["sms"].fetch_media(url)
    assert media.content.startswith(b"\x89PNG") and len(media.content) == 1004 and media.content_type == "image/png"
    assert fake.calls[-1]["authorized"]


async def test_media_credentials_do_not_follow_a_redirect_to_the_cdn(rt, fake):
    url = fake.add_media(b"GIF89a", "image/gif", via_cdn=True)
    media = await rt.channels["sms"].fetch_media(url)
    assert media.content == b"GIF89a"
    api, cdn = fake.calls
    assert api["authorized"] and cdn["path"].startswith("/cdn/") and not cdn["authorized"]


@pytest.mark.parametrize("chunked", [False, True])
async def test_media_over_the_cap_is_refused(rt, fake, chunked):
    url = fake.add_media(b"x" * 300_000, "image/jpeg", chunked=chunked)
    with pytest.raises(TooLarge):
        await rt.channels["sms"].fetch_media(url, max_bytes=100_000)


async def test_media_outside_our_twilio_account_is_not_fetched(rt, fake):
    channel = rt.channels["sms"]
    other_account = fake.add_media(b"x", "image/png").replace(ACCOUNT_SID, "AC" + "f" * 32)
    for ref in [
        "http://169.254.169.254/latest/meta-data/",
        other_account,
        f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/../../admin",
    ]:
        with pytest.raises(Malformed):
            await channel.fetch_media(ref)
    assert fake.calls == []


def test_the_signature_check_accepts_each_url_form_twilio_may_have_signed_and_nothing_else():
    """Twilio may sign the URL with or without its default port; `signed` (the package's `validate`)
    must accept either, refuse another URL, a forged signature and a dropped repeated value."""
    from starlette.datastructures import ImmutableMultiDict
    from twilio.request_validator import RequestValidator

    from channels.twilio.webhook import signed

    validator = RequestValidator(AUTH_TOKEN)
    pairs = [("From", "+15550001"), ("Body", "hi there"), ("MediaUrl0", "a"), ("MediaUrl0", "b")]
    params = ImmutableMultiDict(pairs)  # what the package reads a repeated field from (`getall`)
    same_place = {"https://gw.example.com/twilio/sms", "https://gw.example.com:443/twilio/sms"}
    elsewhere = "http://gw.example.com:8080/twilio/sms?x=1"
    for url in (*same_place, elsewhere):
        for signed_for in (*same_place, elsewhere):
            signature = validator.compute_signature(signed_for, params)
            expected = url == signed_for or {url, signed_for} <= same_place
            assert signed(validator, url, pairs, signature) is expected, (url, signed_for)
        assert not signed(validator, url, pairs, "forged=")
        assert not signed(validator, url, pairs[:-1], validator.compute_signature(url, params))  # a value dropped
        assert signed(validator, url, pairs, validator.compute_signature(url, params))
