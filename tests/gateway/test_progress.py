"""gateway.progress: what a turn is said to do, who is told, and OutboundMessage.steps."""

from __future__ import annotations

from gateway.events import (
    ApprovalDecision,
    ApprovalRequested,
    Contact,
    DoneForNow,
    HumanResponse,
    Thread,
    ToolCall,
    ToolResult,
    UserMessage,
)
from gateway.messages import Progress
from gateway.outbox import compose
from gateway.progress import Reporter, describe

ORIGIN = Contact(channel="slack", address="U1", conversation="T/D1/1.1", reply_to={"channel": "D1", "thread_ts": "1.1"})


def thread(*events) -> Thread:
    return Thread(
        id="th_p", agent="helpdesk", origin=ORIGIN, events=[UserMessage(text="hi", sender="slack:U1"), *events]
    )


def test_a_fresh_turn_thinks_and_a_turn_after_a_tool_reads_its_result():
    assert describe(thread())[0] == "Thinking"
    doing, details = describe(thread(ToolCall(call_id="c1", tool="lookup"), ToolResult(call_id="c1", result=1)))
    assert doing == "Reading what lookup returned" and "Ran lookup…" in details


def test_an_approved_call_names_the_tool_it_runs():
    approved = thread(
        ApprovalRequested(call_id="c1", tool="deploy"), ApprovalDecision(call_id="c1", approved=True, by="slack:U2")
    )
    assert describe(approved)[0] == "Running deploy"


class Shows:
    name = "slack"

    def __init__(self, fail: bool = False) -> None:
        self.seen: list[Progress] = []
        self.fail = fail

    def progress(self, update: Progress) -> None:
        if self.fail:
            raise RuntimeError("broken channel")
        self.seen.append(update)


class Silent:
    name = "sms"


def test_only_the_origin_channel_hears_and_a_broken_one_fails_no_step():
    shows = Shows()
    reporter = Reporter({"slack": shows, "sms": Silent()})
    reporter.started(thread())
    reporter.ended(thread())
    assert [(u.doing, u.reply_to["thread_ts"], u.thread_id) for u in shows.seen] == [
        ("Thinking", "1.1", "th_p"),
        (None, "1.1", "th_p"),
    ]
    assert "sms" not in reporter.channels  # shows nothing: not asked
    Reporter({"slack": Shows(fail=True)}).started(thread())  # logged, not raised


def test_an_answer_carries_the_tools_run_since_the_person_last_spoke():
    t = thread(
        ToolCall(call_id="c1", tool="old"),
        ToolResult(call_id="c1", result=1),
        HumanResponse(text="go on", sender="slack:U1"),
        ToolCall(call_id="c2", tool="lookup"),
        ToolResult(call_id="c2", result=2),
        ToolCall(call_id="c3", tool="refund"),
        ToolResult(call_id="c3", result=3),
        DoneForNow(text="refunded"),
    )
    [final] = compose(t, len(t.events) - 1)
    assert final.kind == "final" and final.steps == ["lookup", "refund"]
