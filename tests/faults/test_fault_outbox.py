"""The one provider window, made visible: a send cut off after the provider took it.

For a channel that cannot deduplicate (Slack, SMS, the test channel), the sender
sets a `sending` marker just before handing a message over. A sender stopped
after that — killed, or its task cancelled — leaves the marker and a pending
entry; the sender that claims the entry finds the marker and records the
delivery `ambiguous` instead of posting again. The message keeps a copy in the
dead-letter stream, so a person who sees the thread can send it again.
"""

from __future__ import annotations

import httpx
from faultkit import sink_channel
from helpers import background, eventually
from plugins import EchoAgent

from gateway.events import InboundMessage
from gateway.outbox import Outbox
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker


async def _deliveries(rt, tid: str) -> list[str]:
    thread = await rt.store.load(tid)
    return [e.status for e in thread.events if e.type == "delivery"] if thread else []


def _deliveries_are(rt, tid: str, statuses: list[str]):
    async def check() -> bool:
        return await _deliveries(rt, tid) == statuses

    return check


async def test_a_send_cut_off_after_the_provider_took_it_is_ambiguous_and_a_person_can_retry(settings, control):
    # No grace: stopping the first sender cancels its send in flight, as a kill would end it.
    settings = settings.model_copy(update={"shutdown_grace": 0.0})
    async with running(
        settings, agents=[EchoAgent()], builtins=False, channels=[sink_channel(f"{control.url}/inbox")]
    ) as rt:
        held = control.arm("send")
        message = InboundMessage(id="in-1", channel="test", conversation="c-1", sender="tester", text="hello")
        tid = (await rt.ingest.accept(message, "echo")).thread_id
        async with background(Worker(rt, "w1"), Outbox(rt, "o1")):
            await eventually(lambda: held.done(), timeout=30)  # the person has the question; o1 waits for the answer
        outbound_id = f"{tid}-1"
        assert control.received()[outbound_id] == 1
        assert await rt.redis.exists(rt.keys.sending(0, outbound_id))

        async with background(Worker(rt, "w2"), Outbox(rt, "o2")):
            # o2 claims the entry o1 left pending, finds the marker, and does not post again.
            await eventually(lambda: _deliveries(rt, tid), timeout=30)
            assert await _deliveries(rt, tid) == ["ambiguous"]
            assert control.received()[outbound_id] == 1
            assert not await rt.redis.exists(rt.keys.sending(0, outbound_id))
            thread = await rt.store.load(tid)
            assert thread.status == "waiting_human" and "interrupted" in thread.events[-1].detail

            # The person asks for it again (the dashboard's retry): it goes out once more, and is sent.
            transport = httpx.ASGITransport(app=create_app(settings, rt))
            async with httpx.AsyncClient(transport=transport, base_url="http://frontdesk") as api:
                r = await api.post(f"/api/v1/threads/{tid}/deliveries/{outbound_id}/retry")
                assert r.status_code == 202, r.text
            await eventually(lambda: control.received()[outbound_id] == 2, timeout=30)
            await eventually(_deliveries_are(rt, tid, ["ambiguous", "sent"]), timeout=30)
        control.release()
