"""The event model's pure core: status derivation, what counts as bookkeeping, the structured
fields that replaced ids written into prose, and threads stored before those fields existed."""

from __future__ import annotations

import json
import typing

from gateway.config import FrontdeskConfig
from gateway.events import (
    DEAD_LETTER,
    ApprovalRequested,
    Contact,
    DeliveryEvent,
    DoneForNow,
    Error,
    Event,
    EventAdapter,
    InboundMessage,
    Note,
    RequestHumanInput,
    Thread,
    ToolCall,
    UserMessage,
    dead_letter_source,
    derive_status,
    last_active,
    note_call_id,
    pending_request,
)
from gateway.router import Router
from gateway.store.entries import Entry

SLACK_OPS = "slack:U0OPS"


def _classes() -> tuple[type, ...]:
    return typing.get_args(typing.get_args(Event)[0])


def test_only_deliveries_and_notes_are_bookkeeping():
    assert {cls.__name__ for cls in _classes() if cls.passive} == {"DeliveryEvent", "Note"}


def test_status_looks_past_bookkeeping_to_what_the_thread_waits_for():
    ask = RequestHumanInput(text="which region?")
    sent = DeliveryEvent(outbound_id="th_x-1", channel="sms", status="sent")
    note = Note(kind="refused", text="me too")
    assert derive_status([UserMessage(text="hi"), ask, sent, note]) == "waiting_human"
    assert pending_request([UserMessage(text="hi"), ask, sent, note]) == (1, ask)
    assert last_active([ask, sent, note]) == (0, ask)
    assert last_active([sent, note]) is None
    approval = ApprovalRequested(call_id="c1", tool="deploy")
    assert derive_status([approval, note]) == "waiting_approval"
    assert derive_status([DoneForNow(text="done"), sent]) == "done"
    assert derive_status([UserMessage(text="hi"), ToolCall(call_id="c1", tool="t")]) == "running"
    assert pending_request([ask, UserMessage(text="eu")]) is None
    assert derive_status([]) == "running"


def test_a_failed_delivery_fails_the_thread_until_a_later_attempt_of_it():
    failed = DeliveryEvent(outbound_id="th_x-1", channel="sms", status="failed")
    sent = DeliveryEvent(outbound_id="th_x-1", channel="sms", status="sent")
    done = DoneForNow(text="done")
    assert derive_status([done, failed]) == "failed"
    assert derive_status([done, failed, sent]) == "done"


def test_a_dead_letter_fails_the_thread_and_names_its_entry_in_a_field():
    error = Error(kind=DEAD_LETTER, message="inbound entry 17-0 dead-lettered: boom", source_id="17-0")
    assert derive_status([UserMessage(text="hi"), error]) == "failed"
    assert dead_letter_source(error) == "17-0"
    # Nothing is read from the message once the field is there.
    assert dead_letter_source(error.model_copy(update={"message": "entry 99-9 dead-lettered"})) == "17-0"
    assert dead_letter_source(Error(kind="tool_error", message="continue entry 1-0 dead-lettered: x")) is None
    assert derive_status([Error(kind="tool_error", message="x")]) == "running"


def test_a_dead_letter_stored_before_source_id_still_names_its_entry():
    old = EventAdapter.validate_json(
        json.dumps(
            {
                "type": "error",
                "kind": "dead_letter",
                "message": "inbound entry 1700000000000-0 dead-lettered: RuntimeError: agent bug",
                "at": "2026-11-01T10:00:00+00:00",
            }
        )
    )
    assert isinstance(old, Error) and old.source_id is None
    assert dead_letter_source(old) == "1700000000000-0"
    assert dead_letter_source(old.model_copy(update={"message": "lost in a reword"})) is None


def test_the_wire_format_is_unchanged_for_events_without_the_new_fields():
    """The API and the store write exclude_none: an event that has no id to record looks as before."""
    error = Error(kind="tool_error", message="x")
    note = Note(kind="refused", text="me too", sender="sms:+1")
    assert set(error.model_dump(mode="json", exclude_none=True)) == {"type", "at", "kind", "message"}
    assert set(note.model_dump(mode="json", exclude_none=True)) == {"type", "at", "kind", "text", "sender"}
    assert "passive" not in Note.model_fields


def test_a_note_names_its_call_in_a_field_and_old_notes_in_their_text():
    assert note_call_id(Note(kind="unclear_approval", text="c1: maybe", call_id="c2")) == "c2"
    old = EventAdapter.validate_json(
        '{"type": "note", "kind": "unclear_approval", "text": "c1: maybe later", "at": "2026-11-01T10:00:00+00:00"}'
    )
    assert isinstance(old, Note) and old.call_id is None
    assert note_call_id(old) == "c1"
    assert note_call_id(Note(kind="refused", text="c1: not me")) is None


def _router() -> Router:
    return Router(FrontdeskConfig(), {"deploybot"}, "deploybot", "example.test")


def _waiting_for_approval(*after: Event) -> Thread:
    origin = Contact(channel="slack", address="U0OPS")
    return Thread(
        id="th_x",
        agent="deploybot",
        origin=origin,
        approvers=[SLACK_OPS],
        events=[
            UserMessage(text="deploy v2", sender=SLACK_OPS),
            ApprovalRequested(call_id="c1", tool="deploy", arguments={"version": "v2"}),
            *after,
        ],
    )


def _reply(thread: Thread, msg_id: str, text: str):
    msg = InboundMessage(id=msg_id, channel="slack", conversation="C1", sender="U0OPS", text=text)
    return _router().decide(thread, Entry(kind="inbound", thread_id=thread.id, data=msg.model_dump(mode="json")))


def test_an_unclear_answer_to_an_approval_is_asked_again_once():
    thread = _waiting_for_approval()
    first = _reply(thread, "m1", "maybe")
    assert isinstance(first.event, Note) and first.event.call_id == "c1" and first.event.text == "maybe"
    assert first.notice is not None and "YES" in first.notice
    second = _reply(thread.with_events(first.event), "m2", "hmm")
    assert isinstance(second.event, Note) and second.event.call_id == "c1"
    assert second.notice is None


def test_an_unclear_answer_noted_before_call_id_existed_is_not_asked_again():
    old_note = EventAdapter.validate_json(
        '{"type": "note", "kind": "unclear_approval", "text": "c1: maybe", "sender": "slack:U0OPS",'
        ' "at": "2026-11-01T10:00:00+00:00"}'
    )
    assert _reply(_waiting_for_approval(old_note), "m2", "hmm").notice is None
    # One about another call does not count.
    other = old_note.model_copy(update={"text": "c0: maybe"})
    assert _reply(_waiting_for_approval(other), "m2", "hmm").notice is not None


def test_the_cli_shows_a_note_with_the_call_it_is_about():
    from gateway.cli import render_thread

    thread = _waiting_for_approval(Note(kind="unclear_approval", text="maybe\nlater", call_id="c1", sender=SLACK_OPS))
    lines = render_thread(thread).splitlines()
    assert lines[0].split()[1] == "waiting_approval"
    assert lines[-1].endswith("note                 unclear_approval: maybe later [c1]")
    assert lines[-2].endswith('approval_requested   deploy({"version": "v2"}) [c1]')
