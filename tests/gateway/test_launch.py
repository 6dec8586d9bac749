"""Launching with a contact the gateway cannot reach: 422 naming the missing setting, and nothing written."""

from __future__ import annotations

import httpx
import pytest
from helpers import make_settings
from pydantic import SecretStr
from servers import app_server

from gateway.runtime import running
from gateway.web.app import create_app

SECRET = "whsec_" + "c2VjcmV0LWZvci1sYXVuY2gtdGVzdHMtMzItYnl0ZXMh"
ACCOUNT = {"twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": SecretStr("twilio-token")}
# Every provider setting off unless a case turns it on, whatever the test process's environment holds.
NOTHING = {
    "slack_bot_token": None,
    "slack_signing_secret": None,
    "slack_app_token": None,
    "twilio_account_sid": None,
    "twilio_auth_token": None,
    "twilio_from_number": None,
    "twilio_messaging_service_sid": None,
    "smtp_relay": None,
    "webhook_secret": None,
    "webhook_secrets": {},
}


async def _written(rt) -> dict[str, int]:
    """Every key under the test's prefix, with its stream length (0 for other types)."""
    found = {}
    async for key in rt.redis.scan_iter(match=f"{rt.settings.key_prefix}:*", count=500):
        found[key] = await rt.redis.xlen(key) if await rt.redis.type(key) == "stream" else 0
    return found


async def _launch(redis_url, prefix, contact: dict[str, str], **overrides):
    """(response, keys before, keys after) for one launch of `calculator` through the real app."""
    settings = make_settings(redis_url, prefix, **(NOTHING | overrides))
    async with running(settings) as rt:
        before = await _written(rt)
        async with app_server(create_app(settings, rt)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            r = await client.post(
                "/api/v1/threads", json={"agent": "calculator", "text": "6 times 7", "contact": contact}
            )
        return r, before, await _written(rt)


WITH_SECRET = {"webhook_secret": SecretStr(SECRET)}
WITH_SENDER = ACCOUNT | {"twilio_from_number": "+15550199"}
# (case, contact, settings, what the answer names)
UNREACHABLE = [
    ("webhook-no-secret", "webhook:https://example.com/cb", {}, "set FRONTDESK_WEBHOOK_SECRET_CALCULATOR or"),
    ("webhook-private", "webhook:http://127.0.0.1:9/cb", WITH_SECRET, "points to a private or loopback address"),
    ("sms-no-account", "sms:+15550100", {}, "'sms' is not configured: no Twilio account: TWILIO_ACCOUNT_SID and"),
    ("sms-no-sender", "sms:+15550100", ACCOUNT, "set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"),
    ("sms-not-e164", "sms:555-0100", WITH_SENDER, "not an E.164 number"),
    ("whatsapp-no-account", "whatsapp:whatsapp:+15550100", {}, "'whatsapp' is not configured: no Twilio account"),
    ("whatsapp-no-sender", "whatsapp:whatsapp:+15550100", ACCOUNT, "set TWILIO_WHATSAPP_FROM"),
    ("whatsapp-bare-number", "whatsapp:+15550100", ACCOUNT, "the form is whatsapp:+15551230001"),
    ("slack-no-token", "slack:U1", {}, "channel 'slack' is not configured: SLACK_BOT_TOKEN is not set"),
    ("slack-no-secret", "slack:U1", {"slack_bot_token": SecretStr("xoxb-test")}, "SLACK_SIGNING_SECRET"),
    ("email-no-relay", "email:ann@example.com", {}, "FRONTDESK_SMTP_RELAY is not set"),
]


def _contact(identity: str) -> dict[str, str]:
    channel, _, address = identity.partition(":")
    return {"channel": channel, "address": address}


@pytest.mark.parametrize("contact, overrides, named", [c[1:] for c in UNREACHABLE], ids=[c[0] for c in UNREACHABLE])
async def test_an_unreachable_contact_is_refused_and_nothing_is_written(redis_url, prefix, contact, overrides, named):
    r, before, after = await _launch(redis_url, prefix, _contact(contact), **overrides)
    assert r.status_code == 422, r.text
    assert named in r.json()["detail"]
    assert after == before  # no thread, no index entry, no stream entry


@pytest.mark.parametrize(
    "contact, overrides",
    [
        ("webhook:http://127.0.0.1:9/cb", {"webhook_secrets": {"calculator": SECRET}, "callback_allow_private": True}),
        ("sms:+15550100", WITH_SENDER),
        ("email:ann@example.com", {"smtp_relay": "127.0.0.1:9"}),
    ],
)
async def test_with_the_setting_in_place_the_same_launch_is_created(redis_url, prefix, contact, overrides):
    r, before, after = await _launch(redis_url, prefix, _contact(contact), **overrides)
    assert r.status_code == 201, r.text
    assert r.json()["id"] in "".join(after) and sum(after.values()) > sum(before.values())


async def test_a_whatsapp_launch_with_a_sender_is_created(redis_url, prefix, monkeypatch):
    monkeypatch.setenv("TWILIO_WHATSAPP_FROM", "+15550199")  # the WhatsApp channel's own setting
    r, before, after = await _launch(redis_url, prefix, _contact("whatsapp:whatsapp:+15550100"), **ACCOUNT)
    assert r.status_code == 201, r.text
    assert r.json()["id"] in "".join(after)
