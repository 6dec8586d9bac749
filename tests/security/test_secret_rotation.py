"""Provider secrets rotate: several values are accepted inbound, the first one is used outbound.

SLACK_SIGNING_SECRET and TWILIO_AUTH_TOKEN take a comma-separated list, like the
webhook secrets, so a deployment can hold the old and the new one while the
provider switches over; the first authenticates what we send.
"""

from __future__ import annotations

import json

from fake_slack import event_body, mention, signed
from helpers import eventually
from pydantic import SecretStr
from seckit import OUR_NUMBER, stack

from gateway.settings import secret_values

OLD_SIGNING, NEW_SIGNING = "old-slack-signing-secret", "new-slack-signing-secret"
OLD_TOKEN, NEW_TOKEN = "old-twilio-auth-token-0000000000", "new-twilio-auth-token-0000000000"
THEM = "+15557770001"


def test_a_rotation_is_read_in_order_and_blanks_are_dropped():
    assert secret_values(SecretStr(" new , old ,,")) == ["new", "old"]
    assert secret_values(SecretStr("one")) == ["one"]
    assert secret_values(None) == []


async def test_slack_requests_signed_with_either_secret_are_taken_and_others_refused(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path, slack_signing_secret=f"{NEW_SIGNING},{OLD_SIGNING}") as s:
        stream = s.rt.keys.inbound(0)
        for n, secret in enumerate([OLD_SIGNING, NEW_SIGNING]):
            raw = json.dumps(event_body(mention(f"hi {n}", ts=f"171000000{n}.000100"), f"EvRot{n}"))
            r = await s.http.post("/slack/events", content=raw, headers=signed(raw, secret=secret))
            assert r.status_code == 200, secret
        assert await s.rt.redis.xlen(stream) == 2
        raw = json.dumps(event_body(mention("forged", ts="1710000009.000100"), "EvRot9"))
        for secret in ("some-other-secret", f"{NEW_SIGNING},{OLD_SIGNING}"):
            r = await s.http.post("/slack/events", content=raw, headers=signed(raw, secret=secret))
            assert r.status_code == 401
        assert await s.rt.redis.xlen(stream) == 2
        # What bolt itself answers (here the URL check) takes the old secret as well.
        raw = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"})
        r = await s.http.post("/slack/events", content=raw, headers=signed(raw, secret=OLD_SIGNING))
        assert r.status_code == 200 and "c-123" in r.text


async def test_twilio_signatures_by_either_token_are_taken_and_the_first_authenticates_sends(
    redis_url, prefix, tmp_path
):
    async with (
        stack(redis_url, prefix, tmp_path, twilio_token=NEW_TOKEN, twilio_auth_token=f"{NEW_TOKEN},{OLD_TOKEN}") as s,
        s.workers(),
    ):
        stream = s.rt.keys.inbound(0)
        url = f"{s.url}/twilio/sms"
        params = {"MessageSid": "SMrot1", "From": THEM, "To": OUR_NUMBER, "Body": "hello", "NumMedia": "0"}
        assert (await s.twilio.webhook(url, params, token=OLD_TOKEN)).status_code == 200
        forged = {**params, "MessageSid": "SMrot2"}
        for token in ("another-token-0000000000000000000", f"{NEW_TOKEN},{OLD_TOKEN}"):
            assert (await s.twilio.webhook(url, forged, token=token)).status_code == 403
        # The echo agent answers by SMS: the REST call carries the first token (the fake checks it).
        await eventually(lambda: len(s.twilio.calls) >= 1)
        assert [c["authorized"] for c in s.twilio.calls] == [True]
        assert s.twilio.calls[0]["form"]["To"] == THEM
        entries = await s.rt.redis.xrange(stream)
        inbound = [f for _, f in entries if f.get(b"k", f.get("k")) in (b"inbound", "inbound")]
        assert len(inbound) == 1  # the forged one was never enqueued
        # A status callback signed with the old token is taken; one signed with neither is refused.
        status = {"MessageSid": "SMrot1", "MessageStatus": "delivered", "To": THEM}
        assert (await s.twilio.webhook(f"{s.url}/twilio/status", status, token=OLD_TOKEN)).status_code == 204
        refused = await s.twilio.webhook(f"{s.url}/twilio/status", status, token="another-token-0000000000000000000")
        assert refused.status_code == 403
