"""The worker: reads the inbound streams and applies each entry to its thread.

Entries of one thread are applied one at a time, in stream order; different
threads run concurrently (one task each, thousands per process while models are
awaited). The mechanism:

1. A reader takes entries from its partition's stream (consumer group). An entry
   for a thread of another partition is forwarded there. Otherwise it goes into
   the thread's inbox — a sorted set ordered by stream id — and the thread is
   kicked.
2. Kicking a thread takes its lease (SET NX PX, renewed while held). The holder
   drains the inbox head first; every save is fenced by the lease, so only one
   process ever writes a thread. Losing the race for the lease is fine: the
   holder drains what we added, and releases only once the inbox is empty.
3. A step that leaves the thread running queues a `continue` entry in the same
   script that saves it, so a crash between two model turns resumes from the
   last saved one. Entries left pending by a dead worker are claimed by another
   after FRONTDESK_CLAIM_TIMEOUT (XAUTOCLAIM), by which time its lease is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, cast

import structlog
from pydantic import ValidationError

from gateway import metrics, tracing
from gateway.errors import LeaseLost, Malformed, Unavailable
from gateway.events import DEAD_LETTER, Error, InboundMessage, Thread
from gateway.loops import loop_failed, redis_down, sleep
from gateway.outbox import compose, notice
from gateway.progress import Reporter
from gateway.router import Decision
from gateway.store.entries import Entry
from gateway.store.streams import StreamRows, missing_group
from gateway.store.threads import GROUP

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = structlog.get_logger("frontdesk.worker")


class Worker:
    """Applies inbound entries to threads; one per process, reading every partition."""

    def __init__(self, runtime: Runtime, consumer: str) -> None:
        self.rt = runtime
        self.consumer = consumer
        self.keys = runtime.keys
        self.store = runtime.store
        self.streams = runtime.streams
        self.settings = runtime.settings
        self._draining: dict[str, asyncio.Task] = {}
        # Set when a thread's drain ends while the readers wait for room (worker_concurrency reached):
        # the readers wake on it instead of polling.
        self._room = asyncio.Event()
        self._again: set[str] = set()
        self._stopping = False  # draining for shutdown: finish the step in flight, start no other
        self._traces: dict[str, str | None] = {}  # thread id -> the trace its current entries belong to
        self._leases: dict[str, float] = {}  # thread id -> when its lease was last extended (monotonic)
        self.progress = Reporter(runtime.channels)

    # ------------------------------------------------------------ loops
    async def run(self, stop: asyncio.Event) -> None:
        loops = [self._heartbeat(stop), self._stopped(stop)]
        for p in range(self.keys.partitions):
            loops += [self._read(p, stop), self._claim(p, stop), self._release_due(p, stop)]
        renewing = asyncio.create_task(self._renew_leases())  # until the last step has drained
        try:
            await asyncio.gather(*loops)
            await self.drain(self.settings.shutdown_grace)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)

    async def _stopped(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True  # at once: a reader may still be blocked in XREADGROUP for a moment

    async def drain(self, grace: float) -> None:
        """Give in-flight steps `grace` seconds, then cancel; what is unsaved stays pending.

        Each thread stops after the step in flight: its `continue` (queued by that step's
        save) waits on the stream for any worker, instead of this one running the rest
        of the thread's turns inside the grace period.
        """
        self._stopping = True
        tasks = list(self._draining.values())
        if tasks:
            log.info("draining", threads=len(tasks), grace=grace)
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _read(self, p: int, stop: asyncio.Event) -> None:
        stream, ready = self.keys.inbound(p), False
        while not stop.is_set():
            if len(self._draining) >= self.settings.worker_concurrency:
                # Back-pressure: leave entries on the stream for other workers until a drain ends.
                # Bounded like the blocking read below, so a stop is seen within half a second.
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._room.wait()
                continue
            try:
                if not ready:
                    await self.streams.ensure_group(stream, GROUP)
                    ready = True
                # No more entries than there is room for (each may start a thread): the rest stay for others.
                room = max(1, self.settings.worker_concurrency - len(self._draining))
                reply = await self.rt.redis.xreadgroup(
                    GROUP, self.consumer, {stream: ">"}, count=min(100, room), block=500
                )
                rows = cast(list[tuple[str, StreamRows]] | None, reply)  # a decoding client; None: nothing came
                for _, entries in rows or []:
                    await self._received(p, entries)
            except Unavailable as exc:
                await redis_down(stop, exc)
            except Exception:
                log.exception("reading the stream failed; retrying", stream=stream)
                ready = False
                await sleep(stop, 1)

    async def _claim(self, p: int, stop: asyncio.Event) -> None:
        """Take over entries a dead worker left pending; now and then trim what all are done with."""
        stream, idle = self.keys.inbound(p), int(self.settings.claim_timeout * 1000)
        rounds = 0
        while not stop.is_set():
            await sleep(stop, max(0.05, self.settings.claim_timeout / 2))
            try:
                _, claimed, *_ = await self.rt.redis.xautoclaim(stream, GROUP, self.consumer, idle, "0-0", count=100)
                await self._received(p, [(entry_id, fields) for entry_id, fields in claimed if fields])
                rounds += 1
                if rounds % 10 == 0:
                    await self.streams.trim(stream, GROUP)
                await self.streams.record_backlog(stream, GROUP, "inbound", p)
            except Unavailable as exc:
                await redis_down(stop, exc)
            except Exception as exc:
                if not missing_group(exc):
                    loop_failed("worker.claim", stream=stream)

    async def _release_due(self, p: int, stop: asyncio.Event) -> None:
        """Move deadlines and other scheduled entries onto the stream when their time comes."""
        while not stop.is_set():
            try:
                await self.streams.release_due(self.keys.delayed(p, "inbound"), self.keys.inbound(p))
            except Unavailable as exc:
                await redis_down(stop, exc)
            await sleep(stop, 0.25)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.rt.redis.hset(self.keys.workers(), self.consumer, f"{time.time():.0f}")
            except Unavailable:
                pass
            await sleep(stop, 5)
        try:
            await self.rt.redis.hdel(self.keys.workers(), self.consumer)
        except Unavailable:
            pass

    # ------------------------------------------------------------ receiving
    async def _received(self, p: int, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Place entries read from partition `p`'s stream in their threads' inboxes, and kick those threads.

        The inbox placements of a batch go to Redis together (one round trip, `ScriptBatch`);
        forwards to other partitions stay one at a time, in stream order.
        """
        stream = self.keys.inbound(p)
        mine: list[Entry] = []
        for entry_id, fields in entries:
            if fields.get("i") == "1" and fields.get("t") in self._draining:
                # A `continue` its save put in the inbox already, for a thread we are draining:
                # our drain takes it next. Were the drain to stop first, the entry stays pending
                # and a claim brings it back here (`_claim`), when the thread is no longer ours.
                continue
            entry = await self._sorted(p, stream, entry_id, fields)
            if entry is not None:
                mine.append(entry)
        placed = await asyncio.gather(
            *(
                self.streams.to_inbox(
                    stream,
                    GROUP,
                    e.stream_id,
                    self.keys.inbox(e.thread_id),
                    self.keys.lease(e.thread_id),
                    e.inbox_member(),
                )
                for e in mine
            )
        )
        for entry, ok in zip(mine, placed, strict=True):
            if ok:
                self.kick(entry.thread_id)

    async def _sorted(self, p: int, stream: str, entry_id: str, fields: dict[str, str]) -> Entry | None:
        """The entry if it belongs to partition `p`; a malformed one is dead-lettered, another partition's forwarded."""
        try:
            entry = Entry.from_fields(entry_id, fields)
            if not entry.thread_id:
                raise Malformed("entry names no thread")
        except (ValueError, Malformed) as exc:
            await self.streams.dead_letter(p, stream, GROUP, entry_id, fields, f"malformed entry: {exc}")
            metrics.DEAD_LETTERS.labels("inbound").inc()
            return None
        target = self.keys.thread_partition(entry.thread_id)
        if target != p:
            # A reply on a conversation of another partition: the thread's own stream orders it.
            marker = self.keys.seen(target, "forward", f"{p}/{entry_id}")
            await self.streams.xadd_once(marker, self.keys.inbound(target), fields, self.settings.dedupe_ttl)
            await self.rt.redis.xack(stream, GROUP, entry_id)
            return None
        return entry

    def kick(self, thread_id: str) -> None:
        if self._stopping:
            return  # the entries stay pending (or queued) for another worker
        if thread_id in self._draining:
            self._again.add(thread_id)
            return
        task = asyncio.create_task(self._drain(thread_id))
        self._draining[thread_id] = task
        metrics.IN_FLIGHT.set(len(self._draining))

        def done(_: asyncio.Task) -> None:
            self._draining.pop(thread_id, None)
            self._room.set()
            self._traces.pop(thread_id, None)
            metrics.IN_FLIGHT.set(len(self._draining))
            if thread_id in self._again:
                self._again.discard(thread_id)
                self.kick(thread_id)

        task.add_done_callback(done)

    # ------------------------------------------------------------ applying
    async def _drain(self, tid: str) -> None:
        structlog.contextvars.bind_contextvars(thread_id=tid)  # this task's own context: every line names the thread
        owner, lease_ms = self.consumer, self.settings.lease_ms
        try:
            if not await self.store.acquire(tid, owner, lease_ms):
                return
        except Unavailable:
            return
        self._leases[tid] = time.monotonic()
        try:
            thread = await self.store.load(tid)
            member = await self.store.inbox_head(tid)
            while True:
                if member is None:
                    if await self.store.release(tid, owner) == 0:
                        member = await self.store.inbox_head(tid)  # something arrived after our last look
                        continue
                    return
                thread, carry_on, member = await self._apply(thread, member, owner)
                if not carry_on or self._stopping:
                    await self.store.drop_lease(tid, owner)
                    return
        except LeaseLost:
            log.warning("lease lost; another worker owns the thread", thread_id=tid)
        except Unavailable as exc:
            log.warning("redis unavailable while applying; the entry stays pending", thread_id=tid, error=str(exc))
        except Exception:
            log.exception("drain failed", thread_id=tid)
            await self.store.drop_lease(tid, owner)
        finally:
            self._leases.pop(tid, None)

    async def _renew_leases(self) -> None:
        """Keep the leases of the threads being drained, a third of their time before they lapse.

        One loop for all of them, renewing together (one round trip, `ScriptBatch`): with a
        thousand threads waiting on a slow model, a renewing task per thread cost a round trip
        for every third step (benchmarks/, scenario 4). A save extends its lease too, so a
        thread that steps often is never renewed here. A lease found lost is forgotten: the
        thread's next save fails and the step is left to the new owner.
        """
        lease_ms = self.settings.lease_ms
        every = lease_ms / 3000
        while True:
            await asyncio.sleep(every / 2)
            now = time.monotonic()
            due = [tid for tid, at in self._leases.items() if now - at >= every]
            if not due:
                continue
            try:
                kept = await asyncio.gather(*(self.store.renew(tid, self.consumer, lease_ms) for tid in due))
            except Unavailable:
                continue
            now = time.monotonic()
            for tid, ok in zip(due, kept, strict=True):
                if tid not in self._leases:
                    continue  # the drain ended meanwhile
                if ok:
                    self._leases[tid] = now
                else:
                    self._leases.pop(tid)

    async def _apply(self, thread: Thread | None, member: str, owner: str) -> tuple[Thread | None, bool, str | None]:
        """Apply one inbox entry; (thread after it, whether to go on draining, the inbox's head after it)."""
        entry = Entry.from_inbox(member)
        structlog.contextvars.bind_contextvars(
            agent=thread.agent if thread else entry.agent or None,
            channel=(entry.data or {}).get("channel") or (thread.origin.channel if thread else None),
            event_id=entry.stream_id,
        )
        bound = log.bind(thread_id=entry.thread_id, entry=entry.stream_id, kind=entry.kind)
        try:
            entry = await self._complete(entry)
            if thread is not None and self._starts_afresh(thread, entry):
                await self._restart(thread, entry)
                entry = dataclasses.replace(entry, kind="ignored", data=None)
            if self.rt.links is not None and entry.kind == "inbound" and (entry.data or {}).get("unverified"):
                await self.rt.links.ensure()  # the router may mint an approval link, synchronously
            decision = self.rt.router.decide(thread, entry)
            if thread is None and decision.new_thread is None:
                raise Malformed(f"{entry.kind} entry for a thread that does not exist")
        except (ValidationError, Malformed, ValueError) as exc:
            bound.warning("entry does not validate; dead-lettered", error=str(exc))
            failed = await self._dead_letter(thread, entry, member, owner, f"invalid: {exc}")
            return failed, True, await self.store.inbox_head(entry.thread_id)
        started = time.perf_counter()
        try:
            with tracing.span(
                "frontdesk.step",
                parent=await self._traceparent(entry),
                thread_id=entry.thread_id,
                entry_kind=entry.kind,
            ):
                thread, head = await self._step(thread, entry, member, decision, owner)
        except LeaseLost:
            raise
        except Unavailable:
            raise
        except Exception as exc:
            p = self.keys.thread_partition(entry.thread_id)
            attempts = await self.rt.redis.hincrby(self.keys.attempts(p), entry.stream_id, 1)
            bound.exception("step failed", attempts=attempts)
            if attempts >= self.settings.max_attempts:
                reason = f"{type(exc).__name__}: {exc}"
                failed = await self._dead_letter(
                    thread or decision.new_thread, entry, member, owner, reason, created=thread is None
                )
                return failed, True, await self.store.inbox_head(entry.thread_id)
            return thread, False, None  # the entry stays pending: a claim retries it
        metrics.STEPS.labels(entry.kind).inc()
        if thread is not None:
            metrics.STEP_SECONDS.labels(thread.agent).observe(time.perf_counter() - started)
        return thread, True, head

    async def _traceparent(self, entry: Entry) -> str | None:
        """The trace an entry continues: the `tp` on its stream entry; a `continue` stays in the last one's."""
        if not tracing.enabled():
            return None
        if entry.kind == "continue":
            return self._traces.get(entry.thread_id)
        stream = self.keys.inbound(self.keys.thread_partition(entry.thread_id))
        rows = cast(StreamRows, await self.rt.redis.xrange(stream, entry.stream_id, entry.stream_id))
        self._traces[entry.thread_id] = tp = rows[0][1].get("tp") if rows else None
        return tp

    async def _complete(self, entry: Entry) -> Entry:
        """Let the channel finish work it kept off the request path (e.g. the full MIME parse)."""
        if entry.kind != "inbound" or not entry.data:
            return entry
        channel = self.rt.channels.get(entry.data.get("channel", ""))
        if channel is None:  # api, cron: no channel object
            return entry
        # Validating the entry for every channel, not only those that complete messages, costs
        # about 5 µs per inbound entry (measured); re-encoding is skipped when nothing changed.
        original = InboundMessage.model_validate(entry.data)
        message = await channel.complete(original)
        if message is None:  # the channel decided it must not reach an agent (e.g. an auto-reply)
            return dataclasses.replace(entry, kind="ignored", data=None)
        if message is original:
            return entry
        return dataclasses.replace(entry, data=message.model_dump(mode="json", exclude_none=True))

    def _starts_afresh(self, thread: Thread | None, entry: Entry) -> bool:
        """A new message on a finished thread of a channel whose conversations never end (SMS)."""
        if entry.kind != "inbound" or thread is None or thread.status not in ("done", "failed"):
            return False
        channel = self.rt.channels.get((entry.data or {}).get("channel", ""))
        return channel is not None and channel.fresh_after_done

    async def _restart(self, thread: Thread, entry: Entry) -> None:
        """Move the conversation to a new thread and send the message there."""
        data = entry.data
        assert data is not None  # an inbound entry (see _starts_afresh) carries its message
        new_id = await self.rt.ingest.rebind(data["channel"], data["conversation"], thread.id)
        target = self.keys.thread_partition(new_id)
        fields = Entry(kind="inbound", thread_id=new_id, data=data, agent=entry.agent or thread.agent).fields()
        marker = self.keys.seen(target, "restart", f"{data['channel']}/{data['id']}")
        await self.streams.xadd_once(marker, self.keys.inbound(target), fields, self.settings.dedupe_ttl)

    async def _step(
        self, thread: Thread | None, entry: Entry, member: str, decision: Decision, owner: str
    ) -> tuple[Thread, str | None]:
        base = decision.new_thread or thread
        assert base is not None
        if not decision.wake:
            return await self._applied(base, entry, member, decision, owner)
        self.progress.started(base)
        going_on = False
        try:
            new, head = await self._applied(base, entry, member, decision, owner)
            going_on = new.status == "running" and len(new.events) > len(base.events)  # a next turn is queued
            return new, head
        finally:
            # Whatever happened — a pause for a person, the end, a failed step — the channel
            # stops showing work, unless the saved step queued the thread's next turn.
            if not going_on:
                self.progress.ended(base)

    async def _applied(
        self, base: Thread, entry: Entry, member: str, decision: Decision, owner: str
    ) -> tuple[Thread, str | None]:
        start = len(base.events)
        new = base
        if decision.wake:
            agent = self.rt.agents.get(base.agent)
            if agent is None:
                raise Malformed(f"no agent named {base.agent!r}")
            new = await agent.step(base, decision.event)
        elif decision.event is not None:
            new = base.with_events(decision.event)
        outbox = compose(new, start)
        if decision.notice and decision.notice_to is not None:
            outbox += notice(new, len(new.events) - 1, decision.notice_to, decision.notice)
        outbox = tracing.stamp([m for m in outbox if self._addressable(m)])
        keep_running = decision.wake and new.status == "running" and len(new.events) > start
        saved = await asyncio.shield(
            self.store.save(
                new,
                new.events[start:],
                owner=owner,
                lease_ms=self.settings.lease_ms,
                previous_status=None if decision.new_thread is not None else base.status,
                entry=entry,
                inbox_member=member,
                outbox=outbox,
                created=decision.new_thread is not None,
                keep_running=keep_running,
            )
        )
        if not saved:
            raise LeaseLost(new.id)
        if new.id in self._leases:
            self._leases[new.id] = time.monotonic()  # the save extended the lease
        await self._schedule_deadlines(new, start)
        return new, saved.next_entry

    def _addressable(self, message) -> bool:
        """Whether the channel has somewhere to send it (a webhook caller without a callback polls)."""
        channel = self.rt.channels.get(message.channel)
        return channel is None or channel.addressable(message)

    async def _schedule_deadlines(self, thread: Thread, start: int) -> None:
        for index in range(start, len(thread.events)):
            event = thread.events[index]
            if event.type == "request_human_input" and event.deadline is not None:
                p = self.keys.thread_partition(thread.id)
                entry = Entry(kind="timeout", thread_id=thread.id, data={"request_index": index})
                await self.streams.schedule(self.keys.delayed(p, "inbound"), event.deadline.timestamp(), entry.fields())

    async def _dead_letter(
        self, thread: Thread | None, entry: Entry, member: str, owner: str, reason: str, *, created: bool = False
    ) -> Thread | None:
        """Mark the thread failed (until a replay), then move the entry to the dead-letter stream.

        In that order: the mark is fenced by the lease, so a worker that lost the thread
        writes nothing and leaves the entry pending for the new owner, which dead-letters
        it in turn (its attempts are counted already); the reverse order could leave an
        entry dead-lettered with no trace on its thread.
        """
        failed = None
        if thread is not None:
            failed = thread.with_events(
                Error(
                    kind=DEAD_LETTER,
                    message=f"{entry.kind} entry {entry.stream_id} dead-lettered: {reason[:1000]}",
                    source_id=entry.stream_id,
                )
            )
            if not await self.store.save(
                failed, failed.events[-1:], owner=owner, entry=None, created=created, previous_status=thread.status
            ):
                raise LeaseLost(thread.id)
        p = self.keys.thread_partition(entry.thread_id)
        stream = self.keys.inbound(p)
        await self.streams.dead_letter(
            p,
            stream,
            GROUP,
            entry.stream_id,
            entry.fields(),
            reason,
            inbox=self.keys.inbox(entry.thread_id),
            member=member,
        )
        metrics.DEAD_LETTERS.labels("inbound").inc()
        return failed
