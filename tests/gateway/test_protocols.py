"""The channel contract: what a channel may import, what start-up checks, what an Accepted gets back."""

from __future__ import annotations

import pytest

from gateway.errors import ANSWERS, Answer, ConfigError, RateLimited, answer
from gateway.messages import Accepted, InboundMessage
from gateway.protocols import Channel, ChannelBase, checked_channel, checked_namespace

# Which core modules a channel may import is checked in tests/test_layering.py.


def test_a_channel_lacking_members_is_refused_at_start_up_by_name():
    class Half:
        name = "half"

        async def send(self, message): ...

    with pytest.raises(ConfigError, match="'half' lacks .*addressable.*complete.*ChannelBase"):
        checked_channel(Half())

    class Whole(ChannelBase):
        name = "whole"

    assert isinstance(checked_channel(Whole()), Channel)


@pytest.mark.parametrize("namespace", ["dashboard", "{p0}", "Sms", "", "a:b"])
def test_a_state_namespace_cannot_reach_the_cores_keys(namespace):
    with pytest.raises(ConfigError):
        checked_namespace(namespace)


def _message() -> InboundMessage:
    return InboundMessage(id="m1", channel="x", conversation="c", sender="ann")


def test_what_each_transport_answers():
    limited = Accepted(thread_id="", limited=True, retry_after=7)
    for transport in ("http", "smtp", "pull"):
        with pytest.raises(RateLimited) as caught:
            answer(transport, limited, _message())
        assert (
            caught.value.retry_after == 7 and caught.value.status == 429 and caught.value.smtp_reply.startswith("451")
        )
    for transport in ("slack", "twilio"):  # providers that retry a refusal, or never do: their ordinary answer
        assert answer(transport, limited, _message()) is Answer.DROPPED
    for transport in ANSWERS:
        assert answer(transport, Accepted(thread_id="t", duplicate=True), _message()) is Answer.TAKEN
        assert answer(transport, Accepted(thread_id="t"), _message()) is Answer.TAKEN
        assert set(ANSWERS[transport]) == {"new", "duplicate", "ignored", "limited"}
