"""gateway/links.py: approval links are signed, expire, and name one decision; the router sends them."""

from __future__ import annotations

import time

from helpers import make_settings

from gateway import links
from gateway.config import AgentConfig, FrontdeskConfig
from gateway.events import ApprovalRequested, Contact, InboundMessage, Note, RequestHumanInput, Thread
from gateway.router import Router
from gateway.store.entries import Entry
from gateway.store.keys import Keys

KEY = b"k" * 32
ALICE = "email:alice@example.com"


def test_a_link_verifies_only_with_its_key_unaltered_and_in_time():
    token = links.mint(KEY, "th_1", "c1", ALICE)
    link = links.verify(KEY, token)
    assert link is not None and (link.thread_id, link.call_id, link.identity) == ("th_1", "c1", ALICE)
    assert links.verify(b"x" * 32, token) is None
    body, _, mac = token.partition(".")
    other = links.mint(KEY, "th_2", "c1", ALICE).partition(".")[0]
    assert links.verify(KEY, f"{other}.{mac}") is None  # another thread under this mac
    assert links.verify(KEY, body) is None and links.verify(KEY, "") is None
    assert links.verify(KEY, token, now=time.time() + links.LINK_SECONDS + 1) is None
    assert links.mint(KEY, "th_1", "c1", ALICE) != token  # each has its own nonce: each is used once


def test_links_live_no_longer_than_the_dedupe_that_makes_them_single_use():
    assert links.lifetime(make_settings(None, "t")) == links.LINK_SECONDS
    assert links.lifetime(make_settings(None, "t", dedupe_ttl=600)) == 600


async def test_the_key_comes_from_the_api_token_without_redis():
    linker = links.Linker(
        make_settings(None, "t", api_token="tok", public_url="https://fd.example/"), None, Keys("t", 1)
    )  # type: ignore[arg-type]  # no Redis: the token suffices
    assert await linker.ensure() == linker.key
    url = linker("th_1", "c1", ALICE)
    assert url is not None and url.startswith("https://fd.example/dashboard/approve/")
    assert links.verify(linker.key, url.rsplit("/", 1)[1]).call_id == "c1"


def _unverified(thread: Thread, text: str, config: FrontdeskConfig | None = None, mid: str = "<m1@x>"):
    router = Router(
        config or FrontdeskConfig(), {"deploybot"}, "deploybot", "example.test", lambda *a: "LINK/" + "/".join(a)
    )
    msg = InboundMessage(
        id=mid,
        channel="email",
        conversation="<root@x>",
        sender="alice@example.com",
        text=text,
        reply_to={"to": "mallory@example.net", "message_id": "<m1@x>"},
        unverified="no DKIM signature",
    )
    return router.decide(thread, Entry(kind="inbound", thread_id=thread.id, data=msg.model_dump(mode="json")))


def _thread(request) -> Thread:
    origin = Contact(channel="email", address="alice@example.com")
    return Thread(id="th_x", agent="deploybot", origin=origin, approvers=[ALICE], responders=[ALICE], events=[request])


def test_an_unverified_yes_is_a_note_and_a_link_to_the_from_address():
    decision = _unverified(_thread(ApprovalRequested(call_id="c1", tool="deploy")), "YES")
    assert isinstance(decision.event, Note) and decision.event.kind == "unverified_sender"
    assert decision.event.text == "no DKIM signature" and decision.event.call_id == "c1" and not decision.wake
    assert decision.notice is not None and "LINK/th_x/c1/email:alice@example.com" in decision.notice
    assert decision.notice_to is not None and decision.notice_to.address == "alice@example.com"
    assert "to" not in decision.notice_to.reply_to  # never the Reply-To the sender chose


def test_an_unverified_answer_counts_unless_the_agent_refuses_them():
    asked = _thread(RequestHumanInput(text="which printer?"))
    assert _unverified(asked, "the 4th floor").event.type == "human_response"
    strict = FrontdeskConfig(agents={"deploybot": AgentConfig(unverified_answers=False)})
    refused = _unverified(asked, "the 4th floor", strict)
    assert refused.event.type == "note" and refused.event.kind == "unverified_sender" and not refused.wake


def test_a_flood_of_forged_approvals_mails_the_real_person_three_links_at_most():
    thread = _thread(ApprovalRequested(call_id="c1", tool="deploy"))
    answered = []
    for i in range(5):
        decision = _unverified(thread, "YES", mid=f"<f{i}@x>")
        answered.append(decision.notice is not None)
        thread = thread.with_events(decision.event)
    assert answered == [True, True, True, False, False]
    assert len([e for e in thread.events if e.type == "note"]) == 5  # each one still recorded
