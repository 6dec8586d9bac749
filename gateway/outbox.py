"""The outbox: what a thread says to people, and the senders that deliver it.

The worker turns the events a step appended into OutboundMessages and queues them
in the same script that saves the step. Senders deliver each through its channel.
A provider's explicit "no, later" (429, 5xx) is retried with backoff, honouring
Retry-After, by parking the message in a delayed set rather than sleeping on it;
the last failure goes to the dead-letter stream. Every outcome returns to the
thread as a `delivery` entry, applied by the thread's own writer.

No answer at all (a timeout after the request left) is ambiguous: it is re-sent
only where the receiver deduplicates (`Channel.resend_safe`), otherwise recorded.
A sender killed between handing a message to its provider and recording the
outcome leaves the same doubt; for those channels a `sending` marker, set just
before the send, tells the sender that claims the entry next, which records the
delivery as ambiguous instead of posting it again. An ambiguous message keeps a
copy in the dead-letter stream, so a person can retry it from the dashboard.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, assert_never, cast

import structlog
from pydantic import ValidationError

from gateway import metrics, tracing
from gateway.config import parse_identity
from gateway.errors import DeliveryFailed, Unavailable
from gateway.events import (
    ApprovalDecision,
    ApprovalRequested,
    Contact,
    DeliveryEvent,
    DeliveryStatus,
    Event,
    HumanResponse,
    OutAction,
    OutboundMessage,
    OutKind,
    RequestHumanInput,
    Thread,
)
from gateway.loops import Slots, loop_failed, redis_down, sleep
from gateway.protocols import Channel, Recovers
from gateway.retry import backoff
from gateway.store.entries import Entry
from gateway.store.scripts import Group, Script
from gateway.store.streams import delayed_member, flat, missing_group

if TYPE_CHECKING:
    from gateway.registry import Sent
    from gateway.runtime import Runtime

log = structlog.get_logger("frontdesk.outbox")
GROUP = "senders"
SILENT_CHANNELS = {"api", "cron", "dashboard"}
READ_MOST = 50  # entries one read takes, if as many slots are free
# A message parked behind an earlier one of its thread goes to the stream when that one
# settles (the outcome scripts below). This timer is only the fallback for a head that
# never settles: an entry dead-lettered unreadable (its thread unknown) or lost with a
# Redis failover stays in the unsettled set, and would hold the thread's messages forever.
ORDER_WAIT = 3600.0

# What the outcome scripts share: the message leaves its thread's unsettled set, and the
# thread's next message, if it is parked waiting for this one, goes to the stream now.
_SETTLE = """
redis.call('ZREM', unsettled, outbound_id)
redis.call('HDEL', parked, outbound_id)
local head = redis.call('ZRANGE', unsettled, 0, 0)[1]
local member = head and redis.call('HGET', parked, head)
if member then
  redis.call('HDEL', parked, head)
  if redis.call('ZREM', delayed, member) == 1 then  -- 0: its safety timer released it already
    local fields = cjson.decode(member)
    table.remove(fields, 1)  -- the nonce that keeps equal copies apart
    redis.call('XADD', stream, '*', unpack(fields))
  end
end
"""

# Both outcome scripts acknowledge first: an entry acknowledged already means the
# client is re-sending a script whose answer was lost, and the outcome is recorded.
_ACKED = "if redis.call('XACK', stream, group, entry_id) == 0 then return 2 end\n"
_SETTLED = ["unsettled", "parked", "delayed"]


def outcome_script() -> Script:
    """A delivery that went out: mark it `sent` (for a retry to see), settle it, and tell its thread. 1, or 2: done before."""
    body = (
        _ACKED
        + """
redis.call('SET', sent, status, 'EX', ttl)
redis.call('DEL', sending)
"""
        + _SETTLE
        + """
redis.call('XADD', inbound, '*', unpack(ARGV, entry_at + 1))
return 1
"""
    )
    return Script(
        body,
        keys=["sent", "inbound", "stream", "sending", *_SETTLED],
        args=["ttl", "group", "entry_id", "status", "outbound_id", Group("entry")],
    )


def fail_script() -> Script:
    """A delivery that failed or may have: its copy to the dead-letter stream, settle it, tell its thread. 1, or 2."""
    body = (
        _ACKED
        + """
redis.call('XADD', dlq, '*', 'source', stream, 'source_id', entry_id, 'reason', reason, 'failed_at', failed_at, 'm', copy)
redis.call('DEL', sending)
"""
        + _SETTLE
        + """
redis.call('XADD', inbound, '*', unpack(ARGV, entry_at + 1))
return 1
"""
    )
    return Script(
        body,
        keys=["inbound", "stream", "dlq", "sending", *_SETTLED],
        args=["group", "entry_id", "reason", "failed_at", "copy", "outbound_id", Group("entry")],
    )


def wait_behind_script() -> Script:
    """Park a message behind an earlier unsettled one of its thread, in one stroke with the look.

    So the earlier one cannot settle unseen in between (it would release no one).
    0: none is earlier, send it; 1: parked; 2: the entry is not pending (a re-sent call
    whose answer was lost parked it already); 3: it comes back from its safety timer.
    """
    body = """
if #redis.call('XPENDING', stream, group, entry_id, entry_id, 1) == 0 then return 2 end
if redis.call('HDEL', parked, outbound_id) == 1 then return 3 end
local head = redis.call('ZRANGE', unsettled, 0, 0, 'WITHSCORES')
local index = tonumber(string.match(outbound_id, '-(%d+)$'))
if #head == 0 or head[1] == outbound_id or (index and tonumber(head[2]) >= index) then return 0 end
redis.call('ZADD', delayed, due, member)
redis.call('HSET', parked, outbound_id, member)
redis.call('XACK', stream, group, entry_id)
return 1
"""
    return Script(body, keys=["stream", *_SETTLED], args=["group", "entry_id", "outbound_id", "due", "member"])


OUTCOME, FAIL, WAIT_BEHIND = outcome_script(), fail_script(), wait_behind_script()


# ---------------------------------------------------------------- composing


def reply_to_for(thread: Thread, contact: Contact) -> dict[str, Any]:
    """Where to answer `contact` in place: the latest address they wrote from or we opened."""
    identity = contact.identity
    for event in reversed(thread.events):
        match event.type:
            case "user_message" | "human_response" if event.sender == identity and event.reply_to:
                return event.reply_to
            case "delivery" if event.contact and event.contact.identity == identity and event.contact.reply_to:
                return event.contact.reply_to
    if identity == thread.origin.identity:
        return thread.origin.reply_to
    return contact.reply_to


def _reachable(contact: Contact) -> bool:
    """Whether there is anyone to push a message to (API callers poll instead)."""
    return contact.channel not in SILENT_CHANNELS and bool(contact.address or contact.reply_to)


def _approver_contact(thread: Thread) -> Contact:
    if thread.origin.identity in thread.approvers or not thread.approvers:
        return thread.origin
    return parse_identity(thread.approvers[0])


def _describe_call(tool: str, arguments: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return f"{tool}({args})"


def compose(thread: Thread, start: int) -> list[OutboundMessage]:
    """The messages owed for events `start:` of `thread`, one per event that speaks to a person."""
    out: list[OutboundMessage] = []
    for index in range(start, len(thread.events)):
        out += _notices_of_outcome(thread, index)
        said = _says(thread, thread.events[index])
        if said is None or not _reachable(said.contact):
            continue
        out.append(
            _outbound(
                thread,
                f"{thread.id}-{index}",
                said.contact,
                reply_to_for(thread, said.contact),
                said.text,
                said.kind,
                choices=said.choices,
                actions=said.actions,
                updates=said.updates,
                approvers=said.approvers,
                steps=_steps_before(thread, index) if said.kind in ("question", "final") else [],
            )
        )
    return out


def _outbound(
    thread: Thread, outbound_id: str, to: Contact, reply_to: dict[str, Any], text: str, kind: OutKind, **more: Any
) -> OutboundMessage:
    return OutboundMessage(
        id=outbound_id,
        thread_id=thread.id,
        agent=thread.agent,
        channel=to.channel,
        address=to.address,
        reply_to=reply_to,
        text=text,
        kind=kind,
        **more,
    )


def _notices_of_outcome(thread: Thread, index: int) -> list[OutboundMessage]:
    """A finished thread's outcome for each contact its `done_for_now` names in `notify`.

    Ids `<thread>-n<k>-<index>`: one event, several messages, each still ordered by its index.
    """
    event = thread.events[index]
    if event.type != "done_for_now" or not event.notify:
        return []
    return [
        _outbound(thread, f"{thread.id}-n{k}-{index}", to, to.reply_to, event.text, "final", payload=event.payload)
        for k, to in enumerate(event.notify)
        if _reachable(to)
    ]


def _steps_before(thread: Thread, index: int) -> list[str]:
    """The tools called between the last thing a person said and event `index`."""
    steps: list[str] = []
    for event in reversed(thread.events[:index]):
        if event.type in ("user_message", "human_response", "approval_decision"):
            break
        if event.type == "tool_call":
            steps.append(event.tool)
    return steps[::-1]


@dataclass(frozen=True)
class _Speech:
    """What one event says to a person, and to whom."""

    kind: OutKind
    contact: Contact
    text: str
    choices: list[str] = field(default_factory=list)
    actions: list[OutAction] = field(default_factory=list)
    updates: str | None = None  # the provider id of the message a receipt answers
    approvers: list[str] = field(default_factory=list)


def _says(thread: Thread, event: Event) -> _Speech | None:
    """The message `event` owes a person; None for an event that speaks to no one."""
    match event.type:
        case "request_human_input":
            text = f"{event.note}\n\n{event.text}" if event.note else event.text
            return _Speech("question", event.contact or thread.origin, text, choices=event.choices)
        case "approval_requested":
            actions = [
                OutAction(call_id=event.call_id, label="Approve", approved=True),
                OutAction(call_id=event.call_id, label="Deny", approved=False),
            ]
            text = f"Approval needed: {_describe_call(event.tool, event.arguments)}"
            text = f"{event.note}\n\n{text}" if event.note else text
            contact = event.contact or _approver_contact(thread)
            approvers = list(dict.fromkeys([*thread.approvers, *([event.contact.identity] if event.contact else [])]))
            return _Speech("approval", contact, text, actions=actions, approvers=approvers)
        case "done_for_now":
            return _Speech("final", thread.origin, event.text)
        case "approval_decision":
            return _receipt(thread, event)
        case "human_response":
            return _choice_receipt(thread, event)
        case "user_message" | "tool_call" | "tool_result" | "context" | "error" | "timeout":
            return None
        case "delivery" | "note":
            return None  # a notice answering a note is queued by the step that noted it (`notice`)
        case _:
            assert_never(event.type)


def _receipt(thread: Thread, decision: ApprovalDecision) -> _Speech | None:
    """Who decided and when, sent where the approval request went, naming that message."""
    for index in range(len(thread.events) - 1, -1, -1):
        request = thread.events[index]
        if isinstance(request, ApprovalRequested) and request.call_id == decision.call_id:
            break
    else:
        return None
    sent = _sent(thread, f"{thread.id}-{index}")
    verdict = "Approved" if decision.approved else "Denied"
    text = f"{verdict} by {decision.by} at {decision.at:%Y-%m-%d %H:%M} UTC: {_describe_call(request.tool, request.arguments)}"
    if decision.comment:
        text += f" ({decision.comment})"
    contact = request.contact or _approver_contact(thread)
    return _Speech("receipt", contact, text, updates=sent.detail if sent else None)


def _choice_receipt(thread: Thread, response: HumanResponse) -> _Speech | None:
    """A pick among a question's choices (a button's answer), reported where the question went, naming it."""
    choice = (response.data or {}).get("choice")
    if not isinstance(choice, str):
        return None
    position = next(i for i in range(len(thread.events) - 1, -1, -1) if thread.events[i] is response)
    for index in range(position - 1, -1, -1):
        request = thread.events[index]
        if isinstance(request, RequestHumanInput):
            break
    else:
        return None
    sent = _sent(thread, f"{thread.id}-{index}")
    if choice not in request.choices or sent is None:
        return None  # typed, not picked, or a question with no message to update
    text = f"{request.text}\n\n→ {choice} (chosen by {response.sender} at {response.at:%Y-%m-%d %H:%M} UTC)"
    return _Speech("receipt", request.contact or thread.origin, text, choices=[choice], updates=sent.detail)


def _sent(thread: Thread, outbound_id: str) -> DeliveryEvent | None:
    """The delivery that says `outbound_id` went out, if one does."""
    return next(
        (
            e
            for e in reversed(thread.events)
            if isinstance(e, DeliveryEvent) and e.outbound_id == outbound_id and e.status == "sent"
        ),
        None,
    )


def notice(thread: Thread, index: int, to: Contact, text: str) -> list[OutboundMessage]:
    """A short reply to someone who wrote (a refusal, a re-asked question)."""
    if not _reachable(to):
        return []
    return [_outbound(thread, f"{thread.id}-{index}", to, to.reply_to or reply_to_for(thread, to), text, "notice")]


# ---------------------------------------------------------------- sending


class Outbox:
    """Delivers outbound messages; one per process, reading every partition."""

    def __init__(self, runtime: Runtime, consumer: str) -> None:
        self.rt = runtime
        self.consumer = consumer
        self.redis = runtime.redis
        self.keys = runtime.keys
        self._outcome = self.redis.register_script(OUTCOME.source)
        self._fail = self.redis.register_script(FAIL.source)
        self._wait_behind = self.redis.register_script(WAIT_BEHIND.source)
        self.slots = Slots(runtime.settings.sender_concurrency)  # one per delivery in flight
        # One lock per thread while any delivery holds or awaits it: each keeps it alive by reference.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task] = set()
        self._busy: set[str] = set()
        self._writes: set[asyncio.Future] = set()  # outcome writes, run to their end through a shutdown

    async def run(self, stop: asyncio.Event) -> None:
        loops = []
        for p in range(self.keys.partitions):
            loops += [self._read(p, stop), self._claim(p, stop), self._release(p, stop)]
        await asyncio.gather(*loops)
        await self.drain(self.rt.settings.shutdown_grace)

    async def drain(self, grace: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # A delivery cancelled after its provider took the message still records what it said.
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def _read(self, p: int, stop: asyncio.Event) -> None:
        """Read only as many entries as there are free slots: a backlog waits on the stream, for any sender."""
        stream = self.keys.outbox(p)
        ready = False
        while not stop.is_set():
            try:
                if not ready:
                    await self.rt.streams.ensure_group(stream, GROUP)
                    ready = True
                entries, taken = await self.rt.streams.read_within(
                    self.slots, stop, stream, GROUP, self.consumer, READ_MOST
                )
            except Unavailable as exc:
                await redis_down(stop, exc)
                continue
            except Exception:
                log.exception("reading the outbox failed; retrying", stream=stream)
                ready = False
                await sleep(stop, 1)
                continue
            for entry_id, fields in entries:
                self._spawn(p, entry_id, fields)  # the delivery gives its slot back when it ends
            self.slots.give(taken - len(entries))

    async def _claim(self, p: int, stop: asyncio.Event) -> None:
        stream, idle = self.keys.outbox(p), int(self.rt.settings.claim_timeout * 1000)
        rounds = 0
        while not stop.is_set():
            await sleep(stop, max(0.1, self.rt.settings.claim_timeout / 2))
            taken = await self.slots.take(stop, READ_MOST)  # a claimed entry is delivered at once: it needs a slot
            if not taken:
                continue
            started = 0
            try:
                _, claimed, *_ = await self.redis.xautoclaim(stream, GROUP, self.consumer, idle, "0-0", count=taken)
                for entry_id, fields in claimed:
                    if fields and entry_id not in self._busy:
                        self._spawn(p, entry_id, fields)
                        started += 1
                await self.rt.streams.record_backlog(stream, GROUP, "outbox", p)
            except Unavailable as exc:
                await redis_down(stop, exc)
                continue
            except Exception as exc:
                if not missing_group(exc):
                    loop_failed("outbox.claim", stream=stream)
                continue
            finally:
                self.slots.give(taken - started)
            rounds += 1
            if rounds % 10 == 0:
                try:
                    await self.rt.streams.trim(stream, GROUP)
                except Unavailable as exc:
                    await redis_down(stop, exc)

    async def _release(self, p: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.rt.streams.release_due(self.keys.delayed(p, "outbox"), self.keys.outbox(p))
            except Unavailable as exc:
                await redis_down(stop, exc)
            await sleep(stop, 0.2)

    def _spawn(self, p: int, entry_id: str, fields: dict[str, str]) -> None:
        """Deliver an entry in a task of its own, which holds one of `slots` (taken by the caller) till it ends."""
        self._busy.add(entry_id)
        task = asyncio.create_task(self._deliver(p, entry_id, fields))
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            self._busy.discard(entry_id)
            self.slots.give()

        task.add_done_callback(done)

    async def _deliver(self, p: int, entry_id: str, fields: dict[str, str]) -> None:
        stream = self.keys.outbox(p)
        try:
            message = OutboundMessage.model_validate_json(fields.get("m", ""))
        except ValidationError as exc:
            await self.rt.streams.dead_letter(p, stream, GROUP, entry_id, fields, f"invalid outbound message: {exc}")
            metrics.DEAD_LETTERS.labels("outbox").inc()
            return
        # This task's own context: every line logged while delivering names the thread and message.
        structlog.contextvars.bind_contextvars(
            thread_id=message.thread_id,
            agent=message.agent or None,
            channel=message.channel,
            event_id=entry_id,
            outbound_id=message.id,
        )
        lock = self._locks.get(message.thread_id)
        if lock is None:
            lock = self._locks[message.thread_id] = asyncio.Lock()
        async with lock:
            try:
                attributes = {"thread_id": message.thread_id, "channel": message.channel, "outbound_id": message.id}
                with tracing.span("frontdesk.deliver", parent=message.traceparent, span_kind="producer", **attributes):
                    await self._attempt(p, stream, entry_id, message)
            except Unavailable as exc:
                log.warning("redis unavailable while delivering; the entry stays pending", error=str(exc))

    async def _attempt(self, p: int, stream: str, entry_id: str, message: OutboundMessage) -> None:
        bound = log.bind(thread_id=message.thread_id, outbound_id=message.id, channel=message.channel)
        if await self.redis.exists(self.keys.sent(p, message.id)):
            await self.redis.xack(stream, GROUP, entry_id)  # a retry of a message already delivered
            return
        if await self._behind(p, stream, entry_id, message):
            return
        channel = self.rt.channels.get(message.channel)
        if channel is not None and not channel.resend_safe:
            marker = self.keys.sending(p, message.id)
            if not await self.redis.set(marker, self.consumer, nx=True, ex=self.rt.settings.dedupe_ttl):
                # A sender (`holder`) stopped after handing this message to the provider and before
                # recording what it said, or it is still waiting for the answer: the person may have it.
                holder = cast(str | None, await self.redis.get(marker))  # a decoding client
                known, found = await self._recover(channel, message, bound)
                if found is not None:
                    await self._finish(self._delivered(p, stream, entry_id, message, found))
                    return
                if not known:
                    bound.warning("delivery ambiguous: an earlier send was interrupted; not re-sent", holder=holder)
                    reason = f"a send by {holder} was interrupted before its outcome was recorded"
                    await self._finish(self._dead(p, stream, entry_id, message, "ambiguous", reason))
                    return
                bound.info("an interrupted send did not reach the provider; sending it", holder=holder)
                await self.redis.set(marker, self.consumer, ex=self.rt.settings.dedupe_ttl)
        try:
            if channel is None:
                raise DeliveryFailed(f"no channel {message.channel!r} is configured")
            sent = await channel.send(message)
        except DeliveryFailed as exc:
            resend_safe = bool(channel and channel.resend_safe)
            await self._finish(self._failed(p, stream, entry_id, message, exc, resend_safe=resend_safe, log=bound))
            return
        except Exception as exc:
            bound.exception("channel raised an unexpected error")
            failed = DeliveryFailed(f"{type(exc).__name__}: {exc}", retryable=True)
            await self._finish(self._failed(p, stream, entry_id, message, failed, resend_safe=False, log=bound))
            return
        await self._finish(self._delivered(p, stream, entry_id, message, sent))
        bound.info("delivered", detail=sent.detail)

    async def _recover(self, channel: Channel | None, message: OutboundMessage, log) -> tuple[bool, Sent | None]:
        """(known, sent): whether the provider can say what it has of an interrupted send, and Sent if all of it."""
        if not isinstance(channel, Recovers):
            return False, None
        try:
            return True, await channel.recover(message)
        except DeliveryFailed as exc:
            log.warning("cannot tell whether an interrupted send reached the provider", error=str(exc))
            return False, None

    async def _finish(self, write: Coroutine[Any, Any, None]) -> None:
        """Run an outcome write to its end, even if the delivery is cancelled meanwhile (a shutdown).

        Cut off between the provider's answer and its record, a delivery would leave its
        `sending` marker, and the sender that claims it next would call a message that
        went out "ambiguous". `drain` waits for these writes.
        """
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        await asyncio.shield(task)

    async def _delivered(self, p: int, stream: str, entry_id: str, message: OutboundMessage, sent: Sent) -> None:
        opened = None
        if sent.conversation:
            opened = Contact(
                channel=message.channel, address=message.address, conversation=sent.conversation, reply_to=sent.reply_to
            )
            await self.rt.ingest.bind(message.channel, sent.conversation, message.thread_id)
        await self._record(p, stream, entry_id, message, "sent", sent.detail, opened)

    async def _behind(self, p: int, stream: str, entry_id: str, message: OutboundMessage) -> bool:
        """Park `message` while an earlier message of its thread is still on its way (a retry).

        Without it, a message waiting out a 429 would be overtaken by the thread's next one.
        It waits in the delayed set, named in the thread's `parked` hash, until the earlier
        one's outcome script puts it back on the stream: nothing looks again in between.
        """
        held = message.model_copy(update={"held": message.held + 1})
        keys, args = WAIT_BEHIND.pack(
            stream=stream,
            unsettled=self.keys.unsettled(message.thread_id),
            parked=self.keys.parked(message.thread_id),
            delayed=self.keys.delayed(p, "outbox"),
            group=GROUP,
            entry_id=entry_id,
            outbound_id=message.id,
            due=int((time.time() + ORDER_WAIT) * 1000),
            member=delayed_member({"m": held.model_dump_json(exclude_none=True)}),
        )
        answer = await self._wait_behind(keys=keys, args=args)
        if answer == 3:
            log.warning(
                "an earlier message of the thread never settled; sent without waiting longer", waited=ORDER_WAIT
            )
        return answer in (1, 2)

    async def _record(
        self, p, stream, entry_id, message: OutboundMessage, status: DeliveryStatus, detail, contact=None
    ) -> None:
        delivery = DeliveryEvent(
            outbound_id=message.id, channel=message.channel, status=status, detail=detail, contact=contact
        )
        entry = Entry(
            kind="delivery", thread_id=message.thread_id, data=delivery.model_dump(mode="json", exclude_none=True)
        )
        keys, args = OUTCOME.pack(
            sent=self.keys.sent(p, message.id),
            inbound=self.keys.inbound(p),
            stream=stream,
            sending=self.keys.sending(p, message.id),
            unsettled=self.keys.unsettled(message.thread_id),
            parked=self.keys.parked(message.thread_id),
            delayed=self.keys.delayed(p, "outbox"),
            ttl=self.rt.settings.dedupe_ttl,
            group=GROUP,
            entry_id=entry_id,
            status=status,
            outbound_id=message.id,
            entry=flat(entry.fields()),
        )
        await self._outcome(keys=keys, args=args)
        metrics.DELIVERIES.labels(message.channel, status).inc()
        tracing.annotate(outcome=status)
        await self._count(message.channel, status)

    async def _failed(
        self, p, stream, entry_id, message: OutboundMessage, exc: DeliveryFailed, *, resend_safe: bool, log
    ) -> None:
        settings = self.rt.settings
        if exc.ambiguous and not resend_safe:
            # The provider may have it: sending again could reach the person twice.
            log.warning("delivery ambiguous; not re-sent", error=str(exc))
            await self._dead(p, stream, entry_id, message, "ambiguous", str(exc))
            return
        if (exc.retryable or exc.ambiguous) and message.attempt + 1 < settings.delivery_attempts:
            delay = backoff(message.attempt, settings.retry_base, settings.retry_max, exc.retry_after)
            log.info(
                "delivery failed; retrying",
                error=str(exc),
                status=exc.status,
                attempt=message.attempt + 1,
                delay=round(delay, 2),
            )
            again = message.model_copy(update={"attempt": message.attempt + 1})
            await self.redis.delete(self.keys.sending(p, message.id))  # the provider said no: the next attempt may send
            await self.rt.streams.park(
                stream,
                GROUP,
                entry_id,
                self.keys.delayed(p, "outbox"),
                time.time() + delay,
                {"m": again.model_dump_json(exclude_none=True)},
            )
            return
        reason = f"{exc} (status {exc.status})" if exc.status else str(exc)
        log.error("delivery failed permanently; dead-lettered", error=reason, attempts=message.attempt + 1)
        await self._dead(p, stream, entry_id, message, "failed", reason)

    async def _dead(self, p, stream, entry_id, message: OutboundMessage, status: DeliveryStatus, reason: str) -> None:
        """Record `status` (failed or ambiguous) on the thread; keep the message in the dead-letter stream for a retry."""
        delivery = DeliveryEvent(outbound_id=message.id, channel=message.channel, status=status, detail=reason[:500])
        entry = Entry(
            kind="delivery", thread_id=message.thread_id, data=delivery.model_dump(mode="json", exclude_none=True)
        )
        fresh = message.model_copy(update={"attempt": 0})
        dlq_reason = reason if status == "failed" else f"{status}, not re-sent: {reason}"
        keys, args = FAIL.pack(
            inbound=self.keys.inbound(p),
            stream=stream,
            dlq=self.keys.dlq(p),
            sending=self.keys.sending(p, message.id),
            unsettled=self.keys.unsettled(message.thread_id),
            parked=self.keys.parked(message.thread_id),
            delayed=self.keys.delayed(p, "outbox"),
            group=GROUP,
            entry_id=entry_id,
            reason=dlq_reason[:2000],
            failed_at=str(time.time()),
            copy=fresh.model_dump_json(exclude_none=True),
            outbound_id=message.id,
            entry=flat(entry.fields()),
        )
        await self._fail(keys=keys, args=args)
        metrics.DELIVERIES.labels(message.channel, status).inc()
        metrics.DEAD_LETTERS.labels("outbox").inc()
        tracing.annotate(outcome=status)
        await self._count(message.channel, status)

    async def _count(self, channel: str, status: str) -> None:
        # Outcomes per channel and minute, for every process at once (the dashboard's health
        # page); the Prometheus counters above are per process. Kept two hours.
        key = self.keys.deliveries(int(time.time() // 60))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, f"{channel}:{status}", 1)
            pipe.expire(key, 7200)
            await pipe.execute()
