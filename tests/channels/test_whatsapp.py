"""channels/whatsapp against a real Redis and a fake Twilio on loopback.

Inbound requests go to the webhook SMS shares, signed with the twilio package's own
algorithm; outbound calls go through the package's async client to the fake. The 24-hour
window is set directly in the channel's keys where a test needs it closed (no waiting).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fake_twilio import ACCOUNT_SID, AUTH_TOKEN, OUTSIDE_WINDOW, FakeTwilio, Reply, sign
from helpers import make_settings
from helpers import stream_entries as entries
from plugins import EchoAgent

import channels.sms as sms
import channels.whatsapp as whatsapp
from channels.whatsapp.channel import TEMPLATE_TEXT_MAX, WhatsAppChannel, template_variables
from channels.whatsapp.settings import WhatsAppSettings
from gateway.errors import ConfigError, DeliveryFailed
from gateway.events import Contact, InboundMessage, OutboundMessage, Thread
from gateway.runtime import running
from gateway.settings import plugin_settings
from gateway.web.app import create_app

PUBLIC = "https://frontdesk.example.com"
THEM, US, FROM = "whatsapp:+15551230001", "whatsapp:+15559870000", "whatsapp:+15550000042"
QUESTION_TEMPLATE, APPROVAL_TEMPLATE = "HX" + "a" * 32, "HX" + "b" * 32
DAY = 24 * 3600


@pytest.fixture
async def fake():
    async with FakeTwilio() as fake:
        yield fake


def wa_settings(redis_url, prefix, fake, **overrides):
    values = dict(
        default_agent="echo",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_url=fake.url,
        twilio_from_number="+15550000001",
        public_url=PUBLIC,
    )
    values.update(overrides)
    return make_settings(redis_url, prefix, **values)


def with_templates(**own):
    """A WhatsApp channel factory with these own settings (default: a sender and a question template)."""
    own = {"from_number": FROM, "template_question": QUESTION_TEMPLATE, **own}
    return lambda context: WhatsAppChannel(context, WhatsAppSettings(**own))


@pytest.fixture
async def rt(redis_url, prefix, fake):
    settings = wa_settings(redis_url, prefix, fake)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[sms.channel, with_templates()]) as rt:
        yield rt


@pytest.fixture
async def client(rt):
    app = create_app(rt.settings, rt)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000") as client:
        yield client


def inbound(sid: str, body: str, *, sender: str = THEM, to: str = US, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "WaId": sender.removeprefix("whatsapp:+"),
        **extra,
    }


async def post(client, path: str, params: dict[str, str], *, signature: str | None = None):
    headers = {"X-Twilio-Signature": signature if signature is not None else sign(PUBLIC + path, params)}
    return await client.post(path, data=params, headers=headers)


def outbound(text: str, *, kind: str = "question", reply_to: dict | None = None, i: int = 1, **kw) -> OutboundMessage:
    values = dict(id=f"th_wa-{i}", thread_id="th_wa", channel="whatsapp", address=THEM, text=text, kind=kind)
    values.update(kw)
    return OutboundMessage(reply_to=reply_to if reply_to is not None else {"to": THEM, "from": US}, **values)


async def open_window(rt, fake: FakeTwilio | None = None, *, hours_ago: float = 0.0) -> None:
    """`THEM` wrote to `US` `hours_ago`, as our record has it (and, given `fake`, Twilio's: a session open)."""
    await rt.channels["whatsapp"].window.opened(THEM, US, at=time.time() - hours_ago * 3600)
    if fake is not None:
        fake.open_session(THEM, US)


# ---------------------------------------------------------------- settings


async def test_the_channel_needs_twilio_credentials(redis_url, prefix, fake):
    settings = wa_settings(redis_url, prefix, fake, twilio_account_sid=None)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[whatsapp.channel]) as rt:
        assert "whatsapp" not in rt.channels
        assert rt.unconfigured == {"whatsapp": "no Twilio account: TWILIO_ACCOUNT_SID not set"}


def test_settings_come_from_the_environment_and_a_bare_number_gains_the_prefix(monkeypatch, redis_url, prefix, fake):
    monkeypatch.setenv("TWILIO_WHATSAPP_FROM", "+15550000042")
    monkeypatch.setenv("FRONTDESK_WHATSAPP_TEMPLATE_APPROVAL", APPROVAL_TEMPLATE)
    monkeypatch.setenv("FRONTDESK_WHATSAPP_TEMPLATE", QUESTION_TEMPLATE)
    own = plugin_settings(WhatsAppSettings, wa_settings(redis_url, prefix, fake))
    assert own.from_number == FROM
    assert own.template_for(outbound("x", kind="approval")) == APPROVAL_TEMPLATE
    assert own.template_for(outbound("x", kind="final")) == QUESTION_TEMPLATE  # the one for every kind


@pytest.mark.parametrize(
    "variable, value, named",
    [
        ("FRONTDESK_WHATSAPP_TEMPLATE_APPROVAL", "my-template", "FRONTDESK_WHATSAPP_TEMPLATE_APPROVAL"),
        ("TWILIO_WHATSAPP_FROM", "555-1234", "TWILIO_WHATSAPP_FROM: "),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_it(monkeypatch, redis_url, prefix, fake, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        plugin_settings(WhatsAppSettings, wa_settings(redis_url, prefix, fake))
    assert named in str(refused.value)


# ---------------------------------------------------------------- inbound


async def test_a_whatsapp_message_on_the_sms_webhook_is_the_whatsapp_channels(rt, client, fake):
    media = fake.add_media(b"\xff\xd8jpeg", "image/jpeg")
    params = inbound("SMwa1", "hello", ProfileName="Ann", NumMedia="1", MediaUrl0=media, MediaContentType0="image/jpeg")
    r = await post(client, "/twilio/sms", params)
    assert r.status_code == 200 and r.text.endswith("<Response />")
    await post(client, "/twilio/sms", inbound("SMsms1", "plain sms", sender="+15551230009", to="+15559870000"))
    wa, text = [e.data for e in await entries(rt, "inbound")]
    assert (wa["channel"], wa["conversation"], wa["sender"], wa["address"]) == ("whatsapp", f"{THEM}/{US}", THEM, US)
    assert wa["reply_to"] == {"to": THEM, "from": US} and wa["data"] == {"profile_name": "Ann"}
    assert [(a["ref"], a["content_type"]) for a in wa["attachments"]] == [(media, "image/jpeg")]
    assert (await rt.channels["whatsapp"].fetch_media(media)).content == b"\xff\xd8jpeg"
    assert (text["channel"], text["sender"]) == ("sms", "+15551230009")  # SMS still SMS's
    assert await rt.channels["whatsapp"].window.last(THEM, US) is None  # not on the request path ...
    message = InboundMessage.model_validate(wa)
    assert await rt.channels["whatsapp"].complete(message) is message  # ... but in the worker's `complete`
    assert await rt.channels["whatsapp"].window.last(THEM, US) == message.received_at.timestamp()


@pytest.mark.parametrize("how", ["forged", "other_token", "tampered_body"])
async def test_a_bad_signature_is_403_and_nothing_is_enqueued(rt, client, how):
    params = inbound("SMbad", "hello")
    signature = {
        "forged": "bm90IGEgc2lnbmF0dXJl",
        "other_token": sign(PUBLIC + "/twilio/sms", params, token="not-our-token"),
        "tampered_body": sign(PUBLIC + "/twilio/sms", {**params, "Body": "something else"}),
    }[how]
    r = await post(client, "/twilio/sms", params, signature=signature)
    assert r.status_code == 403
    assert await entries(rt) == []


async def test_a_duplicate_message_sid_is_answered_alike_and_enqueued_once(rt, client):
    first = await post(client, "/twilio/sms", inbound("SMdup", "hello"))
    again = await post(client, "/twilio/sms", inbound("SMdup", "hello"))
    assert first.status_code == again.status_code == 200 and first.text == again.text
    assert len(await entries(rt, "inbound")) == 1  # so the worker's `complete` opens the window once


async def test_a_message_replayed_after_a_day_opens_no_window(rt):
    await rt.channels["whatsapp"].window.opened(THEM, US, at=time.time() - DAY - 1)
    assert await rt.channels["whatsapp"].window.last(THEM, US) is None


async def test_a_tapped_quick_reply_button_is_the_text(rt, client):
    params = inbound("SMbtn", "", ButtonText="Approve", ButtonPayload="approve", MessageType="button")
    assert (await post(client, "/twilio/sms", params)).status_code == 200
    [entry] = await entries(rt, "inbound")
    assert entry.data["text"] == "Approve"


async def test_without_the_whatsapp_channel_a_whatsapp_message_is_refused_not_taken_as_sms(redis_url, prefix, fake):
    settings = wa_settings(redis_url, prefix, fake)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[sms.channel]) as rt:
        transport = httpx.ASGITransport(app=create_app(settings, rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://internal:8000") as client:
            r = await post(client, "/twilio/sms", inbound("SMnowa", "hello"))
            assert r.status_code == 400 and "whatsapp" in r.json()["detail"]
            assert await entries(rt) == []


# ---------------------------------------------------------------- outbound


async def test_inside_the_window_a_reply_is_free_text_from_the_sender_written_to(rt, fake):
    await open_window(rt, fake, hours_ago=23)
    sent = await rt.channels["whatsapp"].send(outbound("**Hi** there"))
    [message] = fake.messages
    assert (message["To"], message["From"], message["Body"]) == (THEM, US, "Hi there")
    assert "ContentSid" not in message and "Window" not in message  # free text, and Twilio would deliver it
    assert message["StatusCallback"] == f"{PUBLIC}/twilio/status?o=th_wa-1&t=th_wa"
    assert sent.detail == message["Sid"]
    assert sent.conversation == f"{THEM}/{US}" and sent.reply_to == {"to": THEM, "from": US}


async def test_a_long_reply_inside_the_window_goes_in_numbered_segments_once_each(rt, fake):
    await open_window(rt, fake)
    text = " ".join(f"w{i:04d}" for i in range(500))  # 2,999 characters
    fake.answer_next(Reply(), Reply(status=503, code=20503, message="Service Unavailable"))
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["whatsapp"].send(outbound(text))
    assert failed.value.retryable
    await rt.channels["whatsapp"].send(outbound(text, attempt=1))
    bodies = [m["Body"] for m in fake.messages]
    assert [b[:6] for b in bodies] == ["(1/2) ", "(2/2) "]  # the first segment went once
    assert " ".join(b[6:] for b in bodies) == text


async def test_outside_the_window_the_kinds_template_carries_the_text(rt, fake):
    await open_window(rt, hours_ago=25)
    sent = await rt.channels["whatsapp"].send(outbound("Which size?\n\n* small\n* large", choices=["s", "l"]))
    [message] = fake.messages
    assert (message["To"], message["From"], message["ContentSid"]) == (THEM, US, QUESTION_TEMPLATE)
    assert "Body" not in message
    assert json.loads(message["ContentVariables"]) == {"1": "Which size? - small - large Reply with one of: s, l"}
    assert sent.detail == message["Sid"] and sent.conversation == f"{THEM}/{US}"


async def test_a_thread_an_agent_starts_writes_from_the_configured_sender_with_a_template(rt, fake):
    await rt.channels["whatsapp"].send(outbound("Morning check", reply_to={}))
    [message] = fake.messages
    assert (message["To"], message["From"], message["ContentSid"]) == (THEM, FROM, QUESTION_TEMPLATE)


async def test_the_window_closes_five_minutes_early_and_is_kept_per_sender(rt):
    window = rt.channels["whatsapp"].window
    now = time.time()
    await window.opened(THEM, US, at=now - DAY + 600)
    assert await window.is_open(THEM, US, now=now)
    assert not await window.is_open(THEM, US, now=now + 301)  # a send now might reach Twilio too late
    assert not await window.is_open(THEM, FROM, now=now)  # writing to one sender opens no other
    assert not await window.is_open("whatsapp:+15551230002", US, now=now)


async def test_outside_the_window_without_a_template_nothing_is_sent_and_the_failure_says_why(rt, fake):
    await open_window(rt, hours_ago=30)
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["whatsapp"].send(outbound("Approve deploy?", kind="approval"))
    exc = failed.value
    assert not exc.retryable and not exc.ambiguous
    assert "24-hour window" in str(exc) and "FRONTDESK_WHATSAPP_TEMPLATE_APPROVAL" in str(exc)
    assert "no message from them in the last 24 hours" in str(exc)
    assert fake.calls == []


async def test_a_63016_answer_closes_the_window_and_the_template_goes_instead(rt, fake):
    await open_window(rt)  # our record says open; Twilio knows better
    fake.refuse_outside_window = True
    await rt.channels["whatsapp"].send(outbound("hello again"))
    refused, template = fake.calls
    assert refused["form"]["Body"] == "hello again" and template["form"]["ContentSid"] == QUESTION_TEMPLATE
    assert [m.get("ContentSid") for m in fake.messages] == [QUESTION_TEMPLATE]
    assert await rt.channels["whatsapp"].window.last(THEM, US) is None


async def test_a_63016_answer_without_a_template_fails_saying_why(rt, fake):
    await open_window(rt)
    fake.refuse_outside_window = True
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["whatsapp"].send(outbound("done", kind="final"))
    assert "FRONTDESK_WHATSAPP_TEMPLATE_FINAL" in str(failed.value) and not failed.value.retryable
    assert "Twilio refused free text with error 63016" in str(failed.value)
    assert fake.messages == [] and len(fake.calls) == 1


@pytest.mark.parametrize("status, code, retry_after", [(429, 20429, "7"), (500, 20500, None), (503, 20503, None)])
async def test_twilio_refusals_that_may_pass_later_are_retryable(rt, fake, status, code, retry_after):
    await open_window(rt, fake)
    fake.fail_next(status, code, "scripted failure", retry_after)
    with pytest.raises(DeliveryFailed) as failed:
        await rt.channels["whatsapp"].send(outbound("hi"))
    exc = failed.value
    assert (exc.status, exc.retryable, exc.ambiguous) == (status, True, False)
    assert exc.retry_after == (7.0 if retry_after else None)


def test_template_text_is_one_line_and_cut_to_fit():
    variables = json.loads(template_variables(outbound("a\tb\n\nc" + " x" * 2000)))
    assert set(variables) == {"1"}
    text = variables["1"]
    assert text.startswith("a b c x") and "\n" not in text and "\t" not in text and "  " not in text
    assert len(text) == TEMPLATE_TEXT_MAX and text.endswith("…")


async def test_a_launch_needs_a_whatsapp_address_and_a_sender(redis_url, prefix, fake):
    settings = wa_settings(redis_url, prefix, fake)
    async with running(
        settings, agents=[EchoAgent()], builtins=False, channels=[with_templates(from_number=None)]
    ) as rt:
        transport = httpx.ASGITransport(app=create_app(settings, rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            body = {"agent": "echo", "text": "hi", "contact": {"channel": "whatsapp", "address": THEM}}
            r = await client.post("/api/v1/threads", json=body)
            assert r.status_code == 422 and "TWILIO_WHATSAPP_FROM" in r.text
            bare = {**body, "contact": {"channel": "whatsapp", "address": "+15551230001"}}
            r = await client.post("/api/v1/threads", json=bare)
            assert r.status_code == 422 and "whatsapp:+15551230001" in r.text
            assert await rt.store.list() == []
    reachable = with_templates()
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[reachable]) as rt:
        transport = httpx.ASGITransport(app=create_app(settings, rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            r = await client.post("/api/v1/threads", json=body)
            assert r.status_code == 201


# ---------------------------------------------------------------- status callbacks


async def _thread(rt) -> str:
    thread = Thread(id=rt.keys.new_thread_id(), agent="echo", origin=Contact(channel="whatsapp", address=THEM))
    await rt.store.create(thread)
    return thread.id


async def test_status_callbacks_become_whatsapp_delivery_entries_read_included(rt, client, fake):
    await open_window(rt, fake)
    thread_id = await _thread(rt)
    await rt.channels["whatsapp"].send(outbound("hi", id=f"{thread_id}-1", thread_id=thread_id))
    [message] = fake.messages
    for status in ("sent", "delivered", "read"):
        assert await _callback(client, message, status) == 204
    found = await entries(rt, "delivery")
    assert [(e.data["status"], e.data["channel"]) for e in found] == [
        ("sent", "whatsapp"),
        ("delivered", "whatsapp"),
        ("delivered", "whatsapp"),  # `read` is WhatsApp's, and says it was delivered
    ]


async def test_a_63016_status_callback_records_why_and_a_retry_goes_as_a_template(rt, client, fake):
    await open_window(rt)  # Twilio took the free text, then failed it: the window had closed
    thread_id = await _thread(rt)
    message = outbound("hi", id=f"{thread_id}-1", thread_id=thread_id)
    await rt.channels["whatsapp"].send(message)
    [free] = fake.messages
    assert await _callback(client, free, "undelivered", OUTSIDE_WINDOW) == 204
    [entry] = await entries(rt, "delivery")
    assert entry.data["status"] == "failed"
    assert "63016" in entry.data["detail"] and "24-hour window" in entry.data["detail"]
    assert await rt.channels["whatsapp"].window.last(THEM, US) is None
    await rt.channels["whatsapp"].send(message.model_copy(update={"attempt": 1}))  # the operator's retry
    assert [m.get("ContentSid") for m in fake.messages] == [None, QUESTION_TEMPLATE]


async def test_a_status_callback_with_a_bad_signature_is_403(rt, client, fake):
    await open_window(rt)
    thread_id = await _thread(rt)
    await rt.channels["whatsapp"].send(outbound("hi", id=f"{thread_id}-1", thread_id=thread_id))
    assert await _callback(client, fake.messages[0], "delivered", signature="Zm9yZ2Vk") == 403
    assert await entries(rt, "delivery") == []


async def _callback(client, message: dict[str, str], status: str, error_code: int | None = None, signature=None):
    path = message["StatusCallback"].removeprefix(PUBLIC)
    params = {
        "AccountSid": ACCOUNT_SID,
        "MessageSid": message["Sid"],
        "MessageStatus": status,
        "To": message["To"],
        "From": message["From"],
        "ChannelPrefix": "whatsapp",
    }
    if error_code:
        params["ErrorCode"] = str(error_code)
    headers = {"X-Twilio-Signature": signature or sign(message["StatusCallback"], params)}
    return (await client.post(path, data=params, headers=headers)).status_code
