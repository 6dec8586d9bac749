"""The timeline's items as pure functions of a thread: who spoke, what carried it, what to replay."""

from __future__ import annotations

from gateway.events import (
    DEAD_LETTER,
    Contact,
    DeliveryEvent,
    Error,
    EventAdapter,
    Note,
    RequestHumanInput,
    Thread,
    ToolCall,
    UserMessage,
)
from gateway.web.dashboard.timeline import items


def _thread(*events) -> Thread:
    return Thread(id="th_x", agent="helpdesk", origin=Contact(channel="sms", address="+15550001"), events=list(events))


def test_each_event_gets_its_side_title_and_the_deliveries_that_carried_it():
    thread = _thread(
        UserMessage(text="hi", sender="sms:+15550001", channel="sms"),
        ToolCall(call_id="c1", tool="lookup"),
        RequestHumanInput(text="which one?"),
        DeliveryEvent(outbound_id="th_x-2", channel="sms", status="failed"),
        Note(kind="refused", text="me too", sender="sms:+15550002"),
        DeliveryEvent(outbound_id="th_x-4", channel="sms", status="sent"),
    )
    shown = items(thread)
    assert [(i.side, i.title) for i in shown] == [
        ("in", "Message in"),
        ("tool", "Tool call: lookup"),
        ("out", "Question out"),
        ("system", "Delivery failed"),
        ("system", "Note: refused"),
        ("system", "Delivery sent"),
    ]
    assert shown[2].deliveries == [thread.events[3]] and shown[2].to == "sms:+15550001"
    assert shown[4].deliveries == [thread.events[5]] and shown[4].to == "sms"  # a notice answering the note
    assert [i.retry for i in shown] == [False, False, False, True, False, False]
    assert all(not i.deliveries for i in (shown[0], shown[1], shown[3], shown[5]))


def test_a_dead_lettered_step_offers_a_replay_of_its_entry():
    new = Error(kind=DEAD_LETTER, message="inbound entry 17-0 dead-lettered: boom", source_id="17-0")
    (item,) = items(_thread(new))
    assert item.title == "Dead-lettered" and item.replay_source == "17-0"
    other = Error(kind="tool_error", message="continue entry 1-0 dead-lettered: x")
    assert items(_thread(other))[0].replay_source is None


def test_a_dead_letter_stored_before_source_id_still_offers_its_replay():
    old = EventAdapter.validate_json(
        '{"type": "error", "kind": "dead_letter", "at": "2026-11-01T10:00:00+00:00",'
        ' "message": "continue entry 1700000000000-3 dead-lettered: RuntimeError: agent bug"}'
    )
    assert items(_thread(old))[0].replay_source == "1700000000000-3"
