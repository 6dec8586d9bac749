"""gateway/humanlayer: calls read from their threads, without a server (the SDK flows: tests/scenarios)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from helpers import make_settings
from pydantic import ValidationError

from agents.humanlayer.agent import NOT_A_CALL, HumanLayerAgent
from gateway.config import FrontdeskConfig
from gateway.errors import InboundRejected
from gateway.events import (
    ApprovalChoice,
    ApprovalDecision,
    ApprovalRequested,
    Contact,
    HumanResponse,
    InboundMessage,
    Thread,
    UserMessage,
)
from gateway.humanlayer.models import FunctionCallIn, SlackChannel
from gateway.humanlayer.service import (
    NO_COMMENT,
    HumanLayerCalls,
    call_status,
    contact_status,
    public,
    thread_id,
)
from gateway.router import Router
from gateway.store.entries import Entry


def _thread(kind: str, spec: dict, *events) -> Thread:
    record = {"type": kind, "run_id": "run-1", "call_id": "call-1", "spec": spec}
    first = UserMessage(text="x", data={"humanlayer": record})
    return Thread(
        id=thread_id(kind, "call-1"),
        agent="humanlayer",
        origin=Contact(channel="api", address="run-1"),
        events=[first, *events],
    )


def test_thread_ids_are_derived_per_kind_and_safe_in_keys():
    assert thread_id("function_call", "a|b c/d") == thread_id("function_call", "a|b c/d")
    assert thread_id("function_call", "x") != thread_id("human_contact", "x")
    assert re.fullmatch(r"th_hl[fc]_[0-9a-f]{24}", thread_id("human_contact", "|\n{p0}"))


def test_missing_keys_and_nulls_read_the_same_and_an_empty_allowed_list_is_refused():
    sdk = {
        "run_id": "r",
        "call_id": "c",
        "spec": {"fn": "f", "kwargs": {}, "channel": None, "state": None},
        "status": None,
    }
    ts = {"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}}, "extra": 1}
    assert FunctionCallIn.model_validate(sdk) == FunctionCallIn.model_validate(ts)
    with pytest.raises(ValidationError, match="allowed_responder_ids"):
        SlackChannel(channel_or_user_id="C1", allowed_responder_ids=[])


def test_the_bot_token_is_dropped_on_arrival_even_from_a_refused_body():
    channel = {"slack": {"channel_or_user_id": "C1", "bot_token": "xoxb-1"}}
    body = FunctionCallIn.model_validate(
        {"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}, "channel": channel}}
    )
    assert "xoxb-1" not in body.model_dump_json()
    with pytest.raises(ValidationError) as refused:
        SlackChannel.model_validate({"bot_token": "xoxb-1"})  # no channel_or_user_id: the error quotes its input
    assert "xoxb-1" not in str(refused.value) and "channel_or_user_id" in str(refused.value)


def test_a_denial_always_has_a_comment_and_names_the_reject_option_it_picked():
    options = [{"name": "later", "title": "Not now", "prompt_fill": "try again tomorrow"}]
    spec = {"fn": "f", "kwargs": {}, "reject_options": options}
    pending = _thread("function_call", spec)
    assert call_status(pending, pending.events[0].data["humanlayer"])["approved"] is None

    bare = _thread("function_call", spec, ApprovalDecision(call_id="call-1", approved=False, by="slack:U1"))
    status = public(bare)["status"]
    assert status["approved"] is False and status["comment"] == NO_COMMENT and status["reject_option_name"] is None
    assert status["user_info"] == {"identity": "slack:U1"} and status["responded_at"].endswith("Z")

    picked = _thread(
        "function_call", spec, ApprovalDecision(call_id="call-1", approved=False, comment="Not now", by="email:a@b.c")
    )
    assert public(picked)["status"]["reject_option_name"] == "later"


def test_a_reply_naming_an_option_answers_with_its_fill_and_an_empty_answer_counts():
    options = [{"name": "no", "prompt_fill": "No thanks"}, {"name": "yes", "title": "Yes please"}]
    spec = {"msg": "?", "response_options": options}
    named = _thread("human_contact", spec, HumanResponse(text=" NO ", sender="sms:+1555"))
    status = contact_status(named, named.events[0].data["humanlayer"])
    assert status["response"] == "No thanks" and status["response_option_name"] == "no"
    titled = _thread("human_contact", spec, HumanResponse(text="yes please", sender="sms:+1555"))
    status = public(titled)["status"]
    assert (status["response"], status["response_option_name"]) == ("yes please", "yes")  # no fill: the words
    assert status["user_info"] == {"identity": "sms:+1555"}
    empty = _thread("human_contact", {"msg": "?"}, HumanResponse(text="", sender="api"))
    assert public(empty)["status"]["response"] == ""


def _calls(redis_url: str = "redis://unused") -> HumanLayerCalls:
    settings = make_settings(redis_url, "unused", public_url="https://fd.example")
    return HumanLayerCalls(SimpleNamespace(settings=settings))  # type: ignore[arg-type]


RECORD = {"type": "function_call", "run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {"n": "<b>"}}}


def test_a_template_renders_sandboxed_and_escaped():
    html = _calls().render_template("{{ type }} {{ event.spec.kwargs.n }} {{ urls.base_url }}", RECORD)
    assert (
        html
        == f"v1beta2.function_call &lt;b&gt; https://fd.example/dashboard/threads/{thread_id('function_call', 'c')}"
    )


@pytest.mark.parametrize(
    "template",
    ["{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ 1 / 0 }}", "{% for %}", "{{ 'x' * 300000 }}"],
)
def test_a_template_that_reaches_out_fails_or_floods_is_refused_with_422(template):
    with pytest.raises(InboundRejected) as refused:
        _calls().render_template(template, RECORD)
    assert refused.value.status == 422 and "template" in str(refused.value)


def _asked(allowed: list[str]) -> Thread:
    asked = ApprovalRequested(
        call_id="call-1", tool="f", contact=Contact(channel="email", address="boss@x.test"), allowed=allowed
    )
    return _thread("function_call", {"fn": "f", "kwargs": {}}, asked)


def _click(user: str, channel: str) -> Entry:
    message = InboundMessage(
        id=f"click-{user}",
        channel="slack",
        conversation=f"T/{channel}/1.2",
        sender=user,
        text="approve",
        decision=ApprovalChoice(call_id="call-1", approved=True),
        group=channel,
    )
    return Entry(kind="inbound", thread_id="t", data=message.model_dump(mode="json"))


def test_a_request_allowed_to_a_channel_takes_anyone_there_and_no_one_elsewhere():
    """After an escalation the list names the Slack channel first asked: its members may still decide."""
    router = Router(FrontdeskConfig(), {"humanlayer"}, "humanlayer", "frontdesk.localhost")
    thread = _asked(["slack:C1", "email:boss@x.test"])
    assert isinstance(router.decide(thread, _click("U5", "C1")).event, ApprovalDecision)
    refused = router.decide(thread, _click("U5", "C2")).event
    assert refused.type == "note" and refused.kind == "refused"
    only_people = _asked(["slack:U7"])
    assert router.decide(only_people, _click("U5", "C1")).event.type == "note"
    assert isinstance(router.decide(only_people, _click("U7", "C1")).event, ApprovalDecision)


async def test_the_agent_asks_once_then_finishes_and_says_so_to_anyone_else():
    agent = HumanLayerAgent(SimpleNamespace(settings=make_settings("redis://unused", "unused")))  # type: ignore[arg-type]
    slack = {"slack": {"channel_or_user_id": "C1", "context_about_channel_or_user": "ops"}}
    spec = {"fn": "f", "kwargs": {"a": 1}, "channel": slack, "reject_options": [{"name": "no", "title": "Not now"}]}
    thread = _thread("function_call", spec)
    thread.events[0].data["humanlayer"] |= {"contact": {"channel": "slack", "address": "C1"}, "allowed": None}
    asked = await agent.step(thread, None)
    request = asked.events[-1]
    assert request.type == "approval_requested" and request.arguments == {"a": 1}
    assert request.note == "Context: ops\nTo deny, you may give one of these as the reason: Not now"
    assert await agent.step(asked, None) is asked  # waiting: nothing more
    done = await agent.step(asked, ApprovalDecision(call_id="call-1", approved=True, by="slack:U1"))
    assert done.events[-1].type == "done_for_now" and done.events[-1].notify is None  # no webhook URLs set

    stranger = Thread(id="t", agent="humanlayer", origin=Contact(channel="email", address="x@y.z"))
    said = await agent.step(stranger, UserMessage(text="hello", sender="email:x@y.z"))
    assert said.events[-1].type == "done_for_now" and said.events[-1].text == NOT_A_CALL
