"""kill -9 of worker processes at chosen and at random points of many multi-step threads.

A run is one thread of the kit's agent (tests/faults/faultkit.py) whose model and
tool are the control server: 4 tool steps, a question after the 2nd (the test
answers it as the person), then the final answer — two messages out, one in.
Two `frontdesk worker` processes (worker and outbox roles) serve the runs. In
each wave the test arms three points and kills -9 the process that reaches each,
then once more at a random moment; every killed process is replaced at once:

- `model`: the model request of a `continue` turn — right after the save script of
  the turn before (the worker writes nothing between that script and this request);
- `tool`: mid-step, the tool awaited (the model answered; nothing of the turn saved);
- `send`: inside the outbox send — the person's inbox has the message, the sender
  has not heard back, the outcome script has not run.

Then, per run: no accepted message and no step is lost or applied twice, every
outbound message has exactly one recorded outcome, and the person received none
twice. A message whose send was cut off is recorded `ambiguous` (not re-sent).
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from dataclasses import dataclass, field

import pytest
from faultctl import POINTS, Control, fault_env
from helpers import eventually
from test_processes import Proc

from gateway.events import InboundMessage

STEPS, ASK = 4, 2


@dataclass
class Tally:
    """What the runs came to; printed for the record, asserted on the lines that matter."""

    runs: int = 0
    kills: Counter = field(default_factory=Counter)  # point -> kills -9
    lost: int = 0  # expected events missing from a thread
    repeated: int = 0  # events applied more than once
    outcomes_missing: int = 0  # outbound messages with no recorded delivery
    outcomes_extra: int = 0  # outbound messages with more than one
    received_twice: int = 0  # outbound messages the person got more than once
    sent: int = 0
    ambiguous_received: int = 0  # cut off after the provider took it: the person has it
    ambiguous_not_received: int = 0  # cut off before it left: the person does not
    sent_not_received: int = 0
    failed: int = 0
    tools_rerun: int = 0  # tool calls made again after a kill (at-least-once tools)
    model_requests: int = 0

    def line(self) -> str:
        kills = ", ".join(f"{p}={self.kills[p]}" for p in (*POINTS, "random"))
        return (
            f"runs={self.runs} kills[{kills}] lost={self.lost} repeated={self.repeated} "
            f"outcomes_missing={self.outcomes_missing} outcomes_extra={self.outcomes_extra} received_twice={self.received_twice} "
            f"sent={self.sent} ambiguous(received)={self.ambiguous_received} ambiguous(not received)={self.ambiguous_not_received} "
            f"sent_not_received={self.sent_not_received} failed={self.failed} tools_rerun={self.tools_rerun} model_requests={self.model_requests}"
        )


def expected_steps() -> list[tuple[str, int | None]]:
    work = [(kind, n) for n in range(STEPS) for kind in ("tool_call", "tool_result")]
    cut = 2 * ASK
    return [
        ("user_message", None),
        *work[:cut],
        ("request_human_input", None),
        ("human_response", None),
        *work[cut:],
        ("done_for_now", None),
    ]


def said(thread) -> list[tuple[str, int | None]]:
    """The thread's events without its bookkeeping: (type, n of the work step)."""
    out = []
    for event in thread.events:
        if event.type in ("delivery", "note"):
            continue
        n = (
            event.arguments.get("n")
            if event.type == "tool_call"
            else event.result
            if event.type == "tool_result"
            else None
        )
        out.append((event.type, n))
    return out


def audit(tally: Tally, thread, control: Control) -> None:
    got, want = said(thread), expected_steps()
    tally.lost += sum((Counter(want) - Counter(got)).values())
    tally.repeated += sum((Counter(got) - Counter(want)).values())
    if not tally.lost and not tally.repeated:
        assert got == want, (thread.id, got)  # and in order
    received = control.received()
    outcomes = Counter(e.outbound_id for e in thread.events if e.type == "delivery")
    for index, event in enumerate(thread.events):
        if event.type not in ("request_human_input", "done_for_now"):
            continue
        oid = f"{thread.id}-{index}"
        tally.outcomes_missing += outcomes[oid] == 0
        tally.outcomes_extra += outcomes[oid] > 1
        tally.received_twice += received[oid] > 1
        for delivery in (e for e in thread.events if e.type == "delivery" and e.outbound_id == oid):
            if delivery.status == "sent":
                tally.sent += 1
                tally.sent_not_received += received[oid] == 0
            elif delivery.status == "ambiguous":
                tally.ambiguous_received += received[oid] > 0
                tally.ambiguous_not_received += received[oid] == 0
            else:
                tally.failed += 1


class Workers:
    """The worker processes, by pid; a killed one is replaced at once."""

    def __init__(self, tmp_path, env, count: int) -> None:
        self.tmp_path, self.env, self.started = tmp_path, env, 0
        self.procs: dict[int, Proc] = {}
        for _ in range(count):
            self.start()

    def start(self) -> None:
        self.started += 1
        proc = Proc(["worker"], self.env, self.tmp_path, f"w{self.started}")
        self.procs[proc.pid] = proc

    def kill(self, pid: int) -> bool:
        """kill -9 `pid` if it is one of ours and alive; start its replacement."""
        proc = self.procs.get(pid)
        if proc is None or not proc.alive():
            return False
        proc.kill()
        del self.procs[pid]
        self.start()
        return True

    def alive(self) -> list[int]:
        return [pid for pid, proc in self.procs.items() if proc.alive()]

    async def stop(self) -> list[int]:
        """SIGTERM each once it is up (a replacement may still be starting), wait; their exit codes."""
        await eventually(lambda: all(proc.up() for proc in self.procs.values()), timeout=60)
        for proc in self.procs.values():
            proc.signal(signal.SIGTERM)
        codes = []
        for proc in self.procs.values():
            codes.append(await proc.exited(timeout=60))
        return codes

    def kill_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()


class Person:
    """Answers each run's question once the thread waits for it (as the person would)."""

    def __init__(self, rt) -> None:
        self.rt = rt
        self.runs: dict[str, int] = {}  # thread id -> run
        self.answered: set[str] = set()

    async def launch(self, run: int) -> str:
        message = InboundMessage(
            id=f"start-{run}",
            channel="test",
            conversation=f"run-{run}",
            sender="tester",
            text=f"run={run} steps={STEPS} ask={ASK}",
        )
        tid = (await self.rt.ingest.accept(message, "faulty")).thread_id
        self.runs[tid] = run
        return tid

    async def answer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for tid, run in list(self.runs.items()):
                if tid not in self.answered and (await self.rt.store.meta(tid)).get("status") == "waiting_human":
                    reply = InboundMessage(
                        id=f"answer-{run}",
                        channel="test",
                        conversation=f"run-{run}",
                        sender="tester",
                        text="yes, carry on",
                    )
                    await self.rt.ingest.accept(reply, "faulty")
                    self.answered.add(tid)
            await asyncio.sleep(0.05)

    async def settled(self, ids: list[str]) -> bool:
        """Every run done, and each of its two messages has an outcome."""
        for tid in ids:
            thread = await self.rt.store.load(tid)
            if thread is None or thread.status != "done":
                return False
            if sum(e.type == "delivery" for e in thread.events) < 2:
                return False
        return True


async def _wave(control: Control, workers: Workers, person: Person, ids: list[str], tally: Tally) -> None:
    """Kill at each armed point once (re-arming a point a dead process reached), and once at random."""
    wanted = set(ids)
    watch: dict[asyncio.Future, str] = {}

    def arm(point: str) -> None:
        match = (
            (lambda hit: hit.thread in wanted and hit.after == "tool_result")
            if point == "model"
            else (lambda hit: hit.thread in wanted)
        )
        watch[control.arm(point, match)] = point

    for point in POINTS:
        arm(point)
    watch[asyncio.ensure_future(asyncio.sleep(random.uniform(0.2, 2.0)))] = "random"
    settled = asyncio.ensure_future(eventually(lambda: person.settled(ids), timeout=120, interval=0.1))
    try:
        while watch and not settled.done():
            done, _ = await asyncio.wait([*watch, settled], return_when=asyncio.FIRST_COMPLETED)
            for future in done & set(watch):
                point = watch.pop(future)
                pid = random.choice(workers.alive()) if point == "random" else future.result().pid
                if workers.kill(pid):
                    tally.kills[point] += 1
                elif point != "random":
                    arm(point)  # the process that got there was killed already: catch the next one
            control.release()
        await settled
    finally:
        control.disarm()
        for future in (*watch, settled):
            future.cancel()
        control.release()


async def _chaos(tmp_path, rt, settings, control: Control, *, waves: int, per_wave: int) -> Tally:
    tally, person = Tally(), Person(rt)
    workers = Workers(tmp_path, fault_env(settings, control), 2)
    stop = asyncio.Event()
    answering = asyncio.create_task(person.answer(stop))
    all_ids: list[str] = []
    try:
        for wave in range(waves):
            ids = [await person.launch(wave * per_wave + i) for i in range(per_wave)]
            all_ids += ids
            await _wave(control, workers, person, ids, tally)
        codes = await workers.stop()
        assert codes == [0] * len(codes), codes
    finally:
        stop.set()
        await answering
        workers.kill_all()
    tally.runs = len(all_ids)
    for tid in all_ids:
        audit(tally, await rt.store.load(tid), control)
    tally.tools_rerun = sum(count - 1 for count in control.tool_calls.values())
    tally.model_requests = len(control.model_requests)
    print(f"\nkill -9 chaos: {tally.line()}")
    return tally


def _check(tally: Tally) -> None:
    assert tally.lost == 0 and tally.repeated == 0, tally.line()
    assert tally.outcomes_missing == 0 and tally.outcomes_extra == 0, tally.line()
    assert tally.received_twice == 0 and tally.sent_not_received == 0 and tally.failed == 0, tally.line()
    assert all(tally.kills[point] >= 1 for point in POINTS), tally.line()
    # A kill inside the send leaves the message with the person and the outcome unknown.
    assert tally.ambiguous_received >= 1, tally.line()


async def test_workers_killed_at_each_point_lose_and_repeat_nothing(tmp_path, rt, settings, control):
    _check(await _chaos(tmp_path, rt, settings, control, waves=1, per_wave=10))


@pytest.mark.slow
async def test_chaos_100_runs_with_workers_killed_at_chosen_and_random_points(tmp_path, rt, settings, control):
    _check(await _chaos(tmp_path, rt, settings, control, waves=10, per_wave=10))
