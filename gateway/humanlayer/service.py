"""HumanLayer calls as frontdesk threads.

A function call is a thread of the `humanlayer` agent whose first step is an approval
request for `fn(**kwargs)`; a contact request is one whose first step asks `msg`. The
thread id is derived from the call id, so a second create of the same call finds the
first thread instead of writing another, and every read is one thread load. The call as
the SDK sent it (a Slack `bot_token` left out) rides in the first event's `data`, and the status
the SDK polls is read from the thread's events each time: there is no second copy.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from gateway.config import parse_identity
from gateway.errors import Conflict, InboundRejected, NotFound
from gateway.events import ApprovalDecision, Contact, HumanResponse, Thread, UserMessage, pending_request, utcnow
from gateway.humanlayer.models import (
    ContactChannel,
    EmailChannel,
    EscalationIn,
    FunctionCallIn,
    FunctionCallStatusIn,
    HumanContactIn,
    HumanContactStatusIn,
    ResponseOption,
)
from gateway.launch import unreachable
from gateway.store.entries import Entry

if TYPE_CHECKING:
    from gateway.runtime import Runtime

AGENT = "humanlayer"
Kind = Literal["function_call", "human_contact"]
# What a denial says when the person gave no reason: the SDK reads a denial without a
# comment as an error ("Rejected with no comment"), never as the denial it is.
NO_COMMENT = "denied (no comment given)"
_PREFIX: dict[Kind, str] = {"function_call": "th_hlf_", "human_contact": "th_hlc_"}
MAX_HTML = 200_000  # a rendered template, kept on the thread and sent with every mail to the contact
_TEMPLATES = SandboxedEnvironment(autoescape=True, undefined=jinja2.ChainableUndefined)


def thread_id(kind: Kind, call_id: str) -> str:
    """The thread of a call: derived, so it is found (and deduplicated) by the call id alone.

    Hashed rather than used as is: a call id is the caller's free text, and thread ids
    travel inside `|`-joined inbox members and Redis key names.
    """
    return _PREFIX[kind] + hashlib.sha256(f"{kind}\0{call_id}".encode()).hexdigest()[:24]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


class HumanLayerCalls:
    """Create, read and answer function calls and contact requests (the routes call these)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # ------------------------------------------------------------ create
    async def create(self, kind: Kind, body: FunctionCallIn | HumanContactIn) -> dict[str, Any]:
        """The stored call, created now unless it exists already (a duplicate never overwrites)."""
        tid = thread_id(kind, body.call_id)
        try:
            thread = self._new_thread(kind, tid, body)
        except InboundRejected:
            if (existing := await self.rt.store.load(tid)) is not None:  # made when it could be: it stands
                return self.public(existing)
            raise
        # Created first, read only when it exists already: a new call (the common case) costs no read.
        if await self.rt.store.create(thread):
            return self.public(thread)
        return self.public(await self.rt.store.load(tid) or thread)  # another create of the call got there first

    def _new_thread(self, kind: Kind, tid: str, body: FunctionCallIn | HumanContactIn) -> Thread:
        if AGENT not in self.rt.agents:
            raise InboundRejected(f"the {AGENT!r} agent is not loaded", status=503)
        spec = body.spec.model_dump(mode="json")  # as the SDK sent it, less a Slack bot_token (models.SlackChannel)
        contact, allowed = self.contact_for(body.spec.channel)
        reason = unreachable(self.rt, AGENT, contact)
        if reason is not None:
            raise InboundRejected(reason, status=422)
        record: dict[str, Any] = {"type": kind, "run_id": body.run_id, "call_id": body.call_id, "spec": spec}
        email = body.spec.channel.email if body.spec.channel else None
        if email is not None and contact.channel == "email":
            contact = self._email_contact(email, record, subject=getattr(body.spec, "subject", None))
        record["contact"] = contact.model_dump(mode="json", exclude_none=True)
        record["allowed"] = allowed
        return Thread(
            id=tid,
            agent=AGENT,
            # The caller polls: the thread's origin is silent, its requests go to `contact`.
            origin=Contact(channel="api", address=body.run_id),
            responders=allowed or [],
            approvers=allowed or [],
            events=[
                UserMessage(
                    text=_summary(kind, spec),
                    sender=f"humanlayer:{body.run_id}",
                    channel="api",
                    data={"humanlayer": record},
                )
            ],
        )

    def contact_for(self, channel: ContactChannel | None) -> tuple[Contact, list[str] | None]:
        """Where the request goes, and who alone may answer it (None: whoever it was sent to)."""
        if channel is None or not (channel.slack or channel.sms or channel.whatsapp or channel.email):
            default = self.rt.settings.humanlayer_default_contact
            if not default:
                raise InboundRejected(
                    "the call names no channel and FRONTDESK_HUMANLAYER_DEFAULT_CONTACT is not set", status=422
                )
            return parse_identity(default), None
        if channel.slack is not None:
            slack = channel.slack
            reply_to = {}
            if slack.thread_ts:  # posted in that Slack thread, whose answers then come to ours
                reply_to = {"channel": slack.channel_or_user_id, "thread_ts": slack.thread_ts, "adopt": True}
            allowed = [f"slack:{u}" for u in slack.allowed_responder_ids] if slack.allowed_responder_ids else None
            return Contact(channel="slack", address=slack.channel_or_user_id, reply_to=reply_to), allowed
        if channel.sms is not None:
            return Contact(channel="sms", address=channel.sms.phone_number), None
        if channel.whatsapp is not None:
            # "+15551230001" or as Twilio writes it, "whatsapp:+15551230001": the same person either way.
            number = channel.whatsapp.phone_number.strip().removeprefix("whatsapp:")
            return Contact(channel="whatsapp", address=f"whatsapp:{number}"), None
        assert channel.email is not None
        return Contact(channel="email", address=channel.email.address), None

    def _email_contact(self, email: EmailChannel, record: dict[str, Any], subject: str | None) -> Contact:
        """An email contact with its threading headers, extra recipients and rendered template."""
        reply_to: dict[str, Any] = {}
        parent = email.in_reply_to_message_id or email.experimental_in_reply_to_message_id
        references = email.references_message_id or email.experimental_references_message_id
        if parent:
            reply_to["message_id"] = parent
            reply_to["references"] = [r for r in (references or "").split() if r != parent]
        chosen = email.subject or email.experimental_subject_line or subject  # the channel's subject wins
        if chosen:
            reply_to["subject"] = chosen
        for field, key in (("to", "also_to"), ("cc", "cc"), ("bcc", "bcc")):
            found = [r.address for r in email.additional_recipients or [] if (r.field or "to") == field]
            if found:
                reply_to[key] = found
        if email.template:
            reply_to["html"] = self.render_template(email.template, record)
        return Contact(channel="email", address=email.address, reply_to=reply_to)

    def render_template(self, template: str, record: dict[str, Any]) -> str:
        """The caller's Jinja2 template, sandboxed: `event`, `type`, `urls.base_url`."""
        base = (self.rt.settings.public_url or "").rstrip("/")
        variables = {
            "event": {k: record[k] for k in ("run_id", "call_id", "spec")},
            "type": f"v1beta2.{record['type']}",
            "urls": {"base_url": f"{base}/dashboard/threads/{thread_id(record['type'], record['call_id'])}"},
        }
        try:
            html = _TEMPLATES.from_string(template).render(**variables)
        except Exception as exc:  # the caller's template: a syntax error, a sandbox refusal, a 1/0 in it
            raise InboundRejected(
                f"spec.channel.email.template: {type(exc).__name__}: {exc}"[:500], status=422
            ) from None
        if len(html) > MAX_HTML:
            raise InboundRejected(f"spec.channel.email.template renders to more than {MAX_HTML} characters", status=422)
        return html

    # ------------------------------------------------------------ read
    async def get(self, kind: Kind, call_id: str) -> dict[str, Any]:
        return self.public(await self._thread(kind, call_id))

    async def _thread(self, kind: Kind, call_id: str) -> Thread:
        thread = await self.rt.store.load(thread_id(kind, call_id))
        if thread is None or record_of(thread) is None:
            raise NotFound(f"no {kind} with call_id {call_id!r}")
        return thread

    def public(self, thread: Thread) -> dict[str, Any]:
        return public(thread)

    async def pending(self, kind: Kind) -> list[dict[str, Any]]:
        """The calls of `kind` still waiting for a person, newest first (at most 100)."""
        status = "waiting_approval" if kind == "function_call" else "waiting_human"
        rows = await self.rt.store.list(status=status, limit=500)
        found = []
        for meta in rows:
            if meta.get("agent") != AGENT or not meta.get("id", "").startswith(_PREFIX[kind]):
                continue
            thread = await self.rt.store.load(meta["id"])
            if thread is not None and record_of(thread) is not None:
                found.append(self.public(thread))
            if len(found) == 100:
                break
        return found

    async def escalate(self, kind: Kind, call_id: str, body: EscalationIn, by: str) -> dict[str, Any]:
        """Ask the pending request again by email, with `escalation_msg` on top (the call stays pending).

        The mail goes to the escalation's channel if it names one, else to the call's own email
        channel; its extra recipients are those of the call, the escalation and its channel. The
        people asked before may still answer, and so may the address mailed now.
        """
        thread = await self._thread(kind, call_id)
        record = record_of(thread)
        assert record is not None
        if self.public(thread)["status"].get("approved") is not None or thread.status == "done":
            raise Conflict("call already has a response")
        waiting = pending_request(thread.events)
        if waiting is None:
            raise Conflict("the call has not been asked yet; escalate once it is pending")
        asked = waiting[1]
        own = (record["spec"].get("channel") or {}).get("email")
        override = body.channel.email if body.channel else None
        primary = override or (EmailChannel.model_validate(own) if own else None)
        if primary is None:
            raise InboundRejected(
                "no email channel to escalate to: the call has none and the escalation names none", status=422
            )
        extra = [*(EmailChannel.model_validate(own).additional_recipients or [] if own else [])]
        extra += [*(body.additional_recipients or []), *(override.additional_recipients or [] if override else [])]
        email = primary.model_copy(update={"additional_recipients": extra})
        contact = self._email_contact(email, record, subject=record["spec"].get("subject"))
        before = asked.allowed or [asked.contact.identity if asked.contact else thread.origin.identity]
        again = asked.model_copy(
            update={
                "contact": contact,
                "allowed": [*before, contact.identity],
                "note": body.escalation_msg,
                "at": utcnow(),
            }
        )
        data = {"type": "escalation", "event": again.model_dump(mode="json", exclude_none=True), "by": by}
        await self.rt.ingest.enqueue(Entry(kind="resume", thread_id=thread.id, data=data))
        return self.public(thread)

    # ------------------------------------------------------------ answer
    async def respond(
        self, kind: Kind, call_id: str, body: FunctionCallStatusIn | HumanContactStatusIn, by: str
    ) -> dict[str, Any]:
        """Answer from code, as the approver would: queued for the thread's writer, like any answer."""
        thread = await self._thread(kind, call_id)
        record = record_of(thread)
        assert record is not None
        current = self.public(thread)["status"]
        if current.get("approved") is not None or current.get("response") is not None:
            raise Conflict("call already has a response")
        data: dict[str, Any]
        if isinstance(body, FunctionCallStatusIn):
            comment = body.comment
            if body.reject_option_name is not None:
                option = _option(record["spec"].get("reject_options"), body.reject_option_name)
                comment = comment or option.prompt_fill or option.title or option.name
            data = {"type": "approval_decision", "call_id": record["call_id"], "approved": body.approved, "by": by}
            if comment is not None:
                data["comment"] = comment
        else:
            text = body.response
            extra = {}
            if body.response_option_name is not None:
                _option(record["spec"].get("response_options"), body.response_option_name)
                extra = {"response_option_name": body.response_option_name}
            data = {"type": "human_response", "text": text, "by": by, "data": extra or None}
        # One answer per call: a second respond, even before the first is applied, is a 409.
        entry = Entry(kind="resume", thread_id=thread.id, data=data | {"id": f"hl-respond:{thread.id}"})
        if not await self.rt.ingest.enqueue(entry, dedupe_id=f"hl-respond:{thread.id}"):
            raise Conflict("call already has a response")
        now = iso(datetime.now(UTC))
        answered = dict(current, responded_at=now)
        if isinstance(body, FunctionCallStatusIn):
            answered |= {"approved": body.approved, "comment": data.get("comment"), "user_info": {"identity": by}}
            if not body.approved and not answered["comment"]:
                answered["comment"] = NO_COMMENT
            answered["reject_option_name"] = body.reject_option_name
        else:
            answered |= {"response": body.response, "response_option_name": body.response_option_name}
        return self.public(thread) | {"status": answered}


def public(thread: Thread) -> dict[str, Any]:
    """The call as the SDK reads it (a FunctionCall or a HumanContact), from its thread."""
    record = record_of(thread)
    assert record is not None
    out = {"run_id": record["run_id"], "call_id": record["call_id"], "spec": record["spec"]}
    status = call_status(thread, record) if record["type"] == "function_call" else contact_status(thread, record)
    return out | {"status": status}


def record_of(thread: Thread) -> dict[str, Any] | None:
    first = thread.events[0] if thread.events else None
    if not isinstance(first, UserMessage) or not first.data:
        return None
    record = first.data.get("humanlayer")
    return record if isinstance(record, dict) else None


def call_status(thread: Thread, record: dict[str, Any]) -> dict[str, Any]:
    """FunctionCallStatus: `approved` null while pending; a denial always carries a comment."""
    status: dict[str, Any] = {"requested_at": iso(thread.created_at), "responded_at": None, "approved": None}
    status |= {"comment": None, "reject_option_name": None, "slack_message_ts": _slack_ts(thread)}
    for event in thread.events:
        if isinstance(event, ApprovalDecision) and event.call_id == record["call_id"]:
            comment = event.comment or (None if event.approved else NO_COMMENT)
            status |= {"responded_at": iso(event.at), "approved": event.approved, "comment": comment}
            status["user_info"] = {"identity": event.by}
            if not event.approved:
                status["reject_option_name"] = _matching(record["spec"].get("reject_options"), event.comment)
            break
    return status


def _slack_ts(thread: Thread) -> str | None:
    """The ts of the Slack message that asked (the first approval request's delivery), if any."""
    asked = next((i for i, e in enumerate(thread.events) if e.type == "approval_requested"), None)
    if asked is None:
        return None
    outbound_id = f"{thread.id}-{asked}"
    for event in thread.events:
        if event.type == "delivery" and event.outbound_id == outbound_id and event.channel == "slack":
            if event.status == "sent":
                return event.detail
    return None


def contact_status(thread: Thread, record: dict[str, Any]) -> dict[str, Any]:
    """HumanContactStatus: `response` null while pending, any string (even "") once answered."""
    status: dict[str, Any] = {"requested_at": iso(thread.created_at), "responded_at": None, "response": None}
    status["response_option_name"] = None
    for event in thread.events:
        if isinstance(event, HumanResponse):
            options = record["spec"].get("response_options")
            named = (event.data or {}).get("response_option_name") or _matching(options, event.text)
            response = event.text
            if named and not (event.data or {}).get("response_option_name"):
                # A reply that picked an option by its name: the LLM reads `response`, not the name.
                option = _option(options, named)
                response = option.prompt_fill or event.text
            status |= {"responded_at": iso(event.at), "response": response, "response_option_name": named}
            status["user_info"] = {"identity": event.sender}
            break
    return status


def choices_of(options: list[dict[str, Any]] | None) -> list[str]:
    """How response or reject options are offered to a person: by title, else by name."""
    return [o.get("title") or o["name"] for o in options or []]


def _matching(options: list[dict[str, Any]] | None, text: str | None) -> str | None:
    """The option a person's words pick (its name, title or fill, case aside), if any."""
    said = (text or "").strip().lower()
    for o in options or []:
        if said and said in {(o.get(k) or "").strip().lower() for k in ("name", "title", "prompt_fill")}:
            return o["name"]
    return None


def _option(options: list[dict[str, Any]] | None, name: str) -> ResponseOption:
    for o in options or []:
        if o["name"] == name:
            return ResponseOption.model_validate(o)
    raise InboundRejected(f"no option named {name!r} on this call", status=422)


def _summary(kind: Kind, spec: dict[str, Any]) -> str:
    if kind == "function_call":
        args = ", ".join(f"{k}={v!r}" for k, v in spec["kwargs"].items())
        return f"HumanLayer approval requested: {spec['fn']}({args})"
    return f"HumanLayer question: {spec['msg']}"
