"""Run the benchmarks and write benchmarks/RESULTS.md.

    python -m benchmarks.run                         # everything, about 25 minutes on 2 cores
    python -m benchmarks.run --only ingest,steps     # some scenarios (RESULTS.md then holds only those)
    python -m benchmarks.run --duration 3 --runs 1 --out /tmp/quick.md   # a quick look
    python -m benchmarks.run --notes                 # NOTES.md edited: copy it into RESULTS.md, measure nothing

py-spy (for the per-step profile) is looked for in .bench-tools/bin, BENCH_PYSPY, PATH.

Scenarios: ingest (1), cores (1b: 1 vs 2 gateway processes), smtp (2), steps (3, with 6's scaling), inflight (4, with
7's worker RSS), e2e (5), aof (6's AOF-off figures), memory (7), peer (8: OpenClaw
beside frontdesk, when `make bench` could install it), newpaths (10). Every process
is started here and stopped by its pid; everything listens on 127.0.0.1.
Curves (9): length (step cost against thread length), stored (ingest and listing
against stored threads), cluster (steps against Redis Cluster masters).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import profile
from benchmarks.harness import Bench, Options, Section
from benchmarks.loadgen import humanlayer
from benchmarks.procs import machine, redis_server, versions
from benchmarks.report import notes, render, with_notes
from benchmarks.scenarios import e2e, growth, http_ingest, memory, peer, smtp_ingest, steps
from benchmarks.stats import Row, Series, ratio_series

HERE = Path(__file__).parent
SCENARIOS = (
    "ingest",
    "cores",
    "smtp",
    "steps",
    "inflight",
    "e2e",
    "aof",
    "memory",
    "peer",
    "length",
    "stored",
    "cluster",
    "newpaths",
)
# One run of each side: OpenClaw takes 30–100 s to take its first mention here and about a minute
# for the load, so the scenario stays at a couple of minutes (1.4 min on a quiet machine).
PEER_RUNS = 1
STEP_THREADS, STEP_TURNS = 6000, 4  # 30,000 steps queued: more than a 2-worker window takes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--duration", type=float, default=Options.duration, help="seconds per measured run")
    parser.add_argument("--runs", type=int, default=Options.runs)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, profiles)")
    parser.add_argument(
        "--notes", action="store_true", help="measure nothing: copy NOTES.md into --out again, its figures untouched"
    )
    args = parser.parse_args(argv)
    if args.notes:
        args.out.write_text(with_notes(args.out.read_text(), notes(HERE / "NOTES.md")))
        print(f"copied NOTES.md into {args.out}")
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    options = Options(duration=args.duration, runs=args.runs)
    rundir = Path(tempfile.mkdtemp(prefix="frontdesk-bench-"))
    bench = Bench(options, rundir)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    print(f"benchmarks: {', '.join(chosen)}; logs in {rundir}", flush=True)
    if load_before > 0.5:
        print(
            f"warning: the machine is busy before we start (load average {load_before:.2f}); figures will be lower",
            flush=True,
        )
    summary: list[str] = []
    with bench.fakes():
        for name in SCENARIOS:
            if name in chosen:
                t0 = time.monotonic()
                print(f"- {name} ...", flush=True)
                RUNNERS[name](bench, summary)
                print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    elapsed = time.monotonic() - started
    bench.raw["load"] = {"before": load_before, "after_1min": os.getloadavg()[0]}
    args_given = sys.argv[1:] if argv is None else argv
    command = ("python -m benchmarks.run " + shlex.join(args_given)).strip()
    text = render(
        bench.sections,
        summary=summary,
        machine=machine(),
        versions=versions(),
        command=command,
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=elapsed,
        load=load_before,
        preface=notes(HERE / "NOTES.md"),
    )
    args.out.write_text(text)
    (rundir / "raw.json").write_text(json.dumps(bench.raw, indent=1, default=str))
    print(text)
    print(f"wrote {args.out} in {elapsed / 60:.1f} min; raw figures and logs in {rundir}")
    return 0


def _summary(summary: list[str], scenario: str, figure: str, target: str, met: bool | None) -> None:
    summary.append(f"| {scenario} | {figure} | {target} | {'' if met is None else ('yes' if met else '**no**')} |")


# ---------------------------------------------------------------- 1, 2


def ingest(bench: Bench, summary: list[str]) -> None:
    results = http_ingest.measure(bench)
    bench.raw["ingest"] = results
    sec = http_ingest.section(results, bench.options)
    bench.sections.append(sec)
    for row in sec.rows:
        if row.target:
            figure = f"{row.what}: {row.frontdesk.show(row.fmt)} {row.unit}" + (
                f" = {row.ratio:.2f}× floor" if "throughput" in row.what else ""
            )
            _summary(summary, "1", figure, row.target, row.met)


def cores(bench: Bench, summary: list[str]) -> None:
    results = http_ingest.measure_processes(bench)
    bench.raw["cores"] = results
    sec = http_ingest.processes_section(results, bench.options, os.cpu_count() or 1)
    bench.sections.append(sec)
    row = sec.rows[0]
    _summary(
        summary,
        "1b",
        f"webhook ingest, {row.frontdesk.show()} req/s = {row.ratio:.2f}× one process",
        row.target,
        row.met,
    )


def smtp(bench: Bench, summary: list[str]) -> None:
    results = smtp_ingest.measure(bench)
    bench.raw["smtp"] = results
    sec = smtp_ingest.section(results, bench.options)
    bench.sections.append(sec)
    row = sec.rows[0]
    _summary(summary, "2", f"SMTP: {row.frontdesk.show()} msg/s = {row.ratio:.2f}× floor", row.target, row.met)


# ---------------------------------------------------------------- 3, 6


def agent_steps(bench: Bench, summary: list[str]) -> None:
    o = bench.options
    runs: dict[str, list[dict]] = {"floor": [], "frontdesk": [], "two": []}
    prof = bench.dir / "steps-profile.txt"
    with redis_server(bench.dir, appendonly=True, name="redis-steps") as (rurl, _):
        for i in range(o.runs):
            runs["floor"].append(steps.run_floor(bench, rurl, threads=STEP_THREADS, turns=STEP_TURNS))
            last = i == o.runs - 1
            runs["frontdesk"].append(
                steps.run_frontdesk(
                    bench, rurl, threads=STEP_THREADS, turns=STEP_TURNS, tag=f"1w{i}", profile_to=prof if last else None
                )
            )
            runs["two"].append(
                steps.run_frontdesk(bench, rurl, workers=2, threads=STEP_THREADS, turns=STEP_TURNS, tag=f"2w{i}")
            )
    bench.raw["steps"] = runs
    f, d = Series([r["rate"] for r in runs["floor"]]), Series([r["rate"] for r in runs["frontdesk"]])
    ratio = ratio_series(d.values, f.values)
    sec = Section(
        title="3. Agent steps (one worker process, instant model)",
        setup=(
            f"{STEP_THREADS:,} threads queued before the worker starts, each taking {STEP_TURNS + 1} steps ({STEP_TURNS} `add` tool turns, then `done_for_now`) "
            "with the `calculator` sample agent and the `openai:` client; the fake model (its own process) answers at once. A step: load the thread, "
            "render prompt and context, call the model over HTTP, validate the tool call, run it, save (one script), queue the next turn or the outbound message. "
            f"Steps counted at the model over {o.duration:g} s after 1 s of warm-up; {o.runs} runs, alternating. "
            "Floor (`benchmarks/floors/steps.py`): the same Redis reads and writes and the same HTTP call with httpx, nothing else, at most 64 steps at once. "
            "frontdesk: `frontdesk worker --no-outbox`, default settings (FRONTDESK_WORKER_CONCURRENCY=2000), Redis AOF everysec."
        ),
    )
    sec.rows += [
        Row(
            "Steps per second",
            "steps/s",
            f,
            d,
            "≥ 0.6× floor",
            met=ratio.median >= 0.6,
            ratio=ratio.median,
            note=f"run ratios {ratio.show('{:.2f}')}",
        ),
        Row(
            "Worker CPU per step",
            "µs",
            Series([r["cpu_us"] for r in runs["floor"]]),
            Series([r["cpu_us"] for r in runs["frontdesk"]]),
        ),
        Row(
            "Worker CPU use",
            "cores",
            Series([r["cpu_share"] for r in runs["floor"]]),
            Series([r["cpu_share"] for r in runs["frontdesk"]]),
            fmt="{:.2f}",
        ),
    ]
    if any(r["exhausted"] for rs in runs.values() for r in rs):
        sec.notes.append("Some runs used up the queued work inside their window: their rate is an underestimate.")
    sec.extra = "Per-step CPU profile of the frontdesk worker (py-spy, last run):\n" + profile.summarize(prof, 25)
    bench.sections.append(sec)
    _summary(
        summary, "3", f"steps: {d.show()} steps/s = {ratio.median:.2f}× floor", "≥ 0.6× floor", ratio.median >= 0.6
    )

    two = Series([r["rate"] for r in runs["two"]])
    scale = ratio_series(two.values, d.values)
    sec6 = Section(
        title="6a. Scaling: 1 vs 2 worker processes",
        setup="Scenario 3's work, with two `frontdesk worker` processes on the same Redis (runs interleaved with scenario 3's).",
        columns=("1 worker", "2 workers"),
    )
    sec6.rows.append(
        Row(
            "Steps per second, 2 workers",
            "steps/s",
            d,
            two,
            "≥ 1.7× one worker",
            met=scale.median >= 1.7,
            ratio=scale.median,
            note=f"run ratios {scale.show('{:.2f}')}",
        )
    )
    sec6.rows.append(
        Row(
            "Worker CPU use, both workers",
            "cores",
            Series([r["cpu_share"] for r in runs["frontdesk"]]),
            Series([r["cpu_share"] for r in runs["two"]]),
            fmt="{:.2f}",
        )
    )
    bench.sections.append(sec6)
    _summary(summary, "6", f"2 workers: {scale.median:.2f}× one worker", "≥ 1.7×", scale.median >= 1.7)


# ---------------------------------------------------------------- 4, 7


def inflight(bench: Bench, summary: list[str]) -> None:
    o = bench.options
    n = o.inflight
    runs = []
    with redis_server(bench.dir, appendonly=True, name="redis-inflight") as (rurl, _):
        for i in range(o.runs):
            runs.append(steps.run_frontdesk(bench, rurl, threads=n, turns=20, delay=1.0, warm=3.0, tag=f"if{i}"))
        idle = steps.idle_rss(bench, rurl) / 2**20
    bench.raw["inflight"] = runs
    bench.raw["idle_rss_mib"] = idle
    held = Series([r["in_flight"] for r in runs])
    rate = Series([r["rate"] for r in runs])
    ideal = Series([n / 1.0 for _ in runs])
    share = ratio_series(rate.values, ideal.values)
    rss = Series([r["rss"][0] / 2**20 for r in runs])
    sec = Section(
        title="4. Waiting on the model (1 s per call)",
        setup=(
            f"{n:,} threads queued for one `frontdesk worker`; the fake model answers every call after 1 s, with the `add` tool for 20 turns. "
            f"Measured over {o.duration:g} s after 3 s: model calls in flight (time-averaged at the model), calls answered per second, "
            f"and the ideal: {n:,} threads ÷ 1 s. The worker's RSS is read at the end of the window (scenario 7)."
        ),
    )
    sec.rows += [
        Row("Model calls in flight (mean)", "calls", None, held, "≥ 1,000", met=held.median >= 1000),
        Row(
            "Steps per second",
            "steps/s",
            ideal,
            rate,
            "≥ 0.9× ideal",
            met=share.median >= 0.9,
            ratio=share.median,
            note="floor column: the ideal",
        ),
        Row("Worker RSS with these threads in flight", "MiB", None, rss),
        Row("Worker RSS at start-up, no thread (imports, clients)", "MiB", None, Series([idle])),
        Row(
            "Worker RSS per thread in flight: (in flight − start-up) ÷ calls in flight",
            "KiB",
            None,
            Series([(r["rss"][0] / 2**20 - idle) * 1024 / max(r["in_flight"], 1) for r in runs]),
        ),
        Row("Worker CPU use", "cores", None, Series([r["cpu_share"] for r in runs]), fmt="{:.2f}"),
    ]
    bench.sections.append(sec)
    _summary(
        summary,
        "4",
        f"{held.median:,.0f} calls in flight, {share.median:.2f}× ideal",
        "≥ 1,000 at ≥ 0.9×",
        held.median >= 1000 and share.median >= 0.9,
    )
    _summary(
        summary,
        "7",
        f"worker RSS with {n:,} threads in flight: {rss.median:,.0f} MiB ({idle:,.0f} MiB of it at start-up)",
        "< 150 MiB",
        rss.median < 150,
    )


def mem(bench: Bench, summary: list[str]) -> None:
    result = memory.measure(bench)
    bench.raw["memory"] = result
    sec = Section(
        title="7. Memory per stored thread",
        setup=(
            f"{result['threads']:,} threads of {', '.join(map(str, result['events']))} events each, made through the worker (a message, nine tool turns, a final answer); Redis without AOF. "
            "Own keys: MEMORY USAGE of the thread's hash and event list. Everything: used_memory growth ÷ threads."
        ),
    )
    sec.rows += [
        Row("A thread's own keys", "bytes", None, Series([result["own_bytes"]])),
        Row("Everything the run left in Redis, per thread", "bytes", None, Series([result["all_bytes"]])),
    ]
    bench.sections.append(sec)
    _summary(
        summary,
        "7",
        f"{result['own_bytes']:,.0f} bytes per stored 20-event thread ({result['all_bytes']:,.0f} with everything around it)",
        "",
        None,
    )


# ---------------------------------------------------------------- 5


def end_to_end(bench: Bench, summary: list[str]) -> None:
    rate = 50.0
    results = e2e.measure(bench, rate=rate)
    bench.raw["e2e"] = results
    sec = Section(
        title="5. End to end (inbound → model → delivered reply)",
        setup=(
            f"{rate:g} requests/s for {bench.options.duration:g} s per run, {bench.options.runs} runs (after a short warm-up round), from the harness process; "
            "frontdesk as deployed in two processes: the HTTP app and `frontdesk worker` (worker + outbox sender). The model answers `done_for_now` at once. "
            "Webhook: signed `POST /webhooks/calculator` with a callback URL → the signed callback reaches the receiver. "
            "Slack: signed `app_mention` → `chat.postMessage` in its thread on the fake Slack API (the acknowledgement reaction on)."
        ),
    )
    for kind, label in (("webhook", "Webhook → callback"), ("slack", "Slack mention → threaded reply")):
        runs = results[kind]
        sec.rows += [
            Row(f"{label}: p50", "ms", None, Series([r["p50"] for r in runs]), fmt="{:.1f}"),
            Row(f"{label}: p99", "ms", None, Series([r["p99"] for r in runs]), fmt="{:.1f}"),
        ]
        _summary(
            summary,
            "5",
            f"{label}: p50 {Series([r['p50'] for r in runs]).show('{:.0f}')} ms, p99 {Series([r['p99'] for r in runs]).show('{:.0f}')} ms",
            "",
            None,
        )
    bench.sections.append(sec)


# ---------------------------------------------------------------- 6b


def aof(bench: Bench, summary: list[str]) -> None:
    """frontdesk on two Redis servers, one with AOF everysec and one without, runs alternating."""
    o = bench.options
    ingest: dict[str, list[dict]] = {"aof": [], "off": []}
    work: dict[str, list[dict]] = {"aof": [], "off": []}
    with (
        redis_server(bench.dir, appendonly=True, name="redis-aof") as (on_url, on_proc),
        redis_server(bench.dir, appendonly=False, name="redis-noaof") as (off_url, off_proc),
    ):
        servers = {"aof": (on_url, on_proc), "off": (off_url, off_proc)}
        with (
            bench.http_server("frontdesk", bench.env(on_url), "frontdesk-http-aof") as on_http,
            bench.http_server("frontdesk", bench.env(off_url), "frontdesk-http-noaof") as off_http,
        ):
            https = {"aof": on_http, "off": off_http}
            for i in range(o.runs + 1):  # the first round warms up
                for mode, (url, proc) in https.items():
                    rurl, rproc = servers[mode]
                    run = http_ingest.one_run(
                        bench, "webhook", url, proc, rurl, rproc, f"a{mode}{i}", duration=o.duration if i else o.warmup
                    )
                    if i:
                        ingest[mode].append(run)
        for i in range(o.runs):
            for mode, (rurl, _) in servers.items():
                work[mode].append(
                    steps.run_frontdesk(bench, rurl, threads=STEP_THREADS, turns=STEP_TURNS, tag=f"{mode}{i}")
                )
    bench.raw["aof"] = {"ingest": ingest, "steps": work}
    sec = Section(
        title="6b. Redis AOF everysec vs off",
        setup=(
            "frontdesk against two dedicated Redis servers at once, one with `appendonly yes` + `appendfsync everysec`, one with `appendonly no`; "
            f"runs alternate between them ({o.runs} each): webhook ingest as in scenario 1, agent steps as in scenario 3 (one worker)."
        ),
        columns=("AOF everysec", "AOF off"),
    )
    for label, unit, key, data in (
        ("Webhook ingest", "req/s", "rps", ingest),
        ("Agent steps, 1 worker", "steps/s", "rate", work),
    ):
        on, off = Series([r[key] for r in data["aof"]]), Series([r[key] for r in data["off"]])
        sec.rows.append(Row(label, unit, on, off, note="ratio: off ÷ everysec"))
    sec.rows.append(
        Row(
            "Webhook ingest: p99",
            "ms",
            Series([r["p99_us"] / 1000 for r in ingest["aof"]]),
            Series([r["p99_us"] / 1000 for r in ingest["off"]]),
            fmt="{:.1f}",
        )
    )
    sec.rows.append(
        Row(
            "Redis CPU per webhook",
            "µs",
            Series([r["redis_cpu_us"] for r in ingest["aof"]]),
            Series([r["redis_cpu_us"] for r in ingest["off"]]),
        )
    )
    bench.sections.append(sec)
    ratio = sec.rows[0].ratio or 0
    _summary(
        summary, "6", f"AOF off ÷ everysec: webhook ingest {ratio:.2f}×, steps {sec.rows[1].ratio or 0:.2f}×", "", None
    )


# ---------------------------------------------------------------- 8: curves


def _curve_row(
    what: str, unit: str, small: Series, mid: Series, large: Series, *, cost: bool, fmt: str = "{:,.0f}"
) -> Row:
    """A curve's measure: smallest and largest in the columns, the middle in the note, the ratio largest ÷ smallest.

    Target: within 1.5× end to end, a cost at most 1.5× its smallest, a rate at least 1/1.5 of it."""
    ratio = ratio_series(large.values, small.values)
    met = ratio.median <= 1.5 if cost else ratio.median >= 1 / 1.5
    return Row(
        what,
        unit,
        small,
        large,
        "≤ 1.5×" if cost else "≥ 0.67×",
        met=met,
        fmt=fmt,
        ratio=ratio.median,
        note=f"middle {mid.show(fmt)}; run ratios {ratio.show('{:.2f}')}",
    )


def _curve_section(bench: Bench, summary: list[str], sec: Section, scenario: str, ends: str) -> None:
    bench.sections.append(sec)
    for row in sec.rows:
        _summary(summary, scenario, f"{row.what}, {ends}: {row.ratio or 0:.2f}×", row.target, row.met)


def length(bench: Bench, summary: list[str]) -> None:
    prof = bench.dir / "length-profile.txt"
    runs = growth.length_curve(bench, profile_to=prof)
    bench.raw["length"] = runs
    a, b, c = (runs[n] for n in growth.LENGTHS)
    sec = Section(
        title="9a. Curve: step cost against thread length (10, 100, 1,000 events)",
        setup=(
            "300 threads of each length stored by `ThreadStore.create` (a message, then `add` tool calls and results), each step queued; "
            "the fake model answers `add` for ever, so every step is on a thread of about that length. One `frontdesk worker --no-outbox`, "
            "default context budget (FRONTDESK_CONTEXT_BUDGET=24,000 tokens: 1,000 events are compacted to fit, 10 and 100 fit whole). "
            f"Steps counted at the model over {bench.options.duration:g} s, starting 1 s after every thread has taken its first step "
            "(that first step reads and renders the whole thread: the cost of taking a thread up, NOTES.md); "
            f"lengths alternate within each of {bench.options.runs} runs."
        ),
        columns=("10 events", "1,000 events"),
    )
    sec.rows += [
        _curve_row("Steps per second", "steps/s", *(Series([r["rate"] for r in x]) for x in (a, b, c)), cost=False),
        _curve_row("Worker CPU per step", "µs", *(Series([r["cpu_us"] for r in x]) for x in (a, b, c)), cost=True),
    ]
    sec.extra = "Per-step CPU profile of the worker on 1,000-event threads (py-spy, last run):\n" + profile.summarize(
        prof, 25
    )
    _curve_section(bench, summary, sec, "9a", "1,000 ÷ 10 events")


def stored(bench: Bench, summary: list[str]) -> None:
    out = growth.stored_curve(bench)
    bench.raw["stored"] = out
    small, mid, large = (out[n] for n in growth.SIZES)
    sec = Section(
        title="9b. Curve: ingest and listing against stored threads (1 k, 100 k, 1 M)",
        setup=(
            "Threads at rest written in the real stored format (`benchmarks/populate.py`: ThreadStore's own rendering, checked against "
            "`ThreadStore.create` byte for byte; a message and `done_for_now` each, all of one agent, channel and person), added to one Redis "
            "(AOF off) in turn. At each size: webhook ingest as in scenario 1 (wrk, "
            f"{bench.options.connections} connections, {bench.options.duration:g} s), then the dashboard's thread page `GET /` and the API's "
            f"`GET /api/v1/threads?limit=50`, one request at a time for {bench.options.duration / 2:g} s each. "
            + "Redis memory per stored thread: "
            + ", ".join(
                f"{n:,}: {out[n]['bytes']:,.0f} bytes ({out[n]['fill_s']:.0f} s to write)" for n in growth.SIZES
            )
            + "."
        ),
        columns=("1 k threads", "1 M threads"),
    )

    def series(x: dict, part: str, key: str) -> Series:
        return Series([r[key] for r in x[part]])

    sec.rows += [
        _curve_row("Webhook ingest", "req/s", *(series(x, "ingest", "rps") for x in (small, mid, large)), cost=False),
        _curve_row(
            "Webhook ingest: p99",
            "ms",
            *(Series([r["p99_us"] / 1000 for r in x["ingest"]]) for x in (small, mid, large)),
            cost=True,
            fmt="{:.1f}",
        ),
        _curve_row(
            "Dashboard `GET /`: latency p50",
            "ms",
            *(series(x, "page", "p50_ms") for x in (small, mid, large)),
            cost=True,
            fmt="{:.1f}",
        ),
        _curve_row(
            "API `GET /api/v1/threads`: latency p50",
            "ms",
            *(series(x, "api", "p50_ms") for x in (small, mid, large)),
            cost=True,
            fmt="{:.1f}",
        ),
    ]
    _curve_section(bench, summary, sec, "9b", "1 M ÷ 1 k threads")


def cluster(bench: Bench, summary: list[str]) -> None:
    runs = growth.cluster_curve(bench)
    bench.raw["cluster"] = runs
    one, three = (Series([r["rate"] for r in runs[m]]) for m in (1, 3))
    ratio = ratio_series(three.values, one.values)
    sec = Section(
        title="9c. Curve: steps per second against Redis Cluster masters (1 vs 3)",
        setup=(
            f"Scenario 3's work ({6000:,} threads of 5 steps, one `frontdesk worker --no-outbox`) on a Redis Cluster on loopback of 1 and of 3 masters "
            "(AOF off, slots split evenly, started side by side, runs alternating), FRONTDESK_PARTITIONS=3 on both."
        ),
        columns=("1 master", "3 masters"),
    )
    sec.rows += [
        Row(
            "Steps per second",
            "steps/s",
            one,
            three,
            "≥ 0.67×",
            met=ratio.median >= 1 / 1.5,
            ratio=ratio.median,
            note=f"run ratios {ratio.show('{:.2f}')}",
        ),
        Row(
            "Worker CPU per step", "µs", Series([r["cpu_us"] for r in runs[1]]), Series([r["cpu_us"] for r in runs[3]])
        ),
    ]
    if any(r["exhausted"] for rs in runs.values() for r in rs):
        sec.notes.append("Some runs used up the queued work inside their window: their rate is an underestimate.")
    bench.sections.append(sec)
    _summary(summary, "9c", f"steps, 3 ÷ 1 masters: {ratio.median:.2f}×", "≥ 0.67×", ratio.median >= 1 / 1.5)


# ---------------------------------------------------------------- 9: this round's new paths


def new_paths(bench: Bench, summary: list[str]) -> None:
    """WhatsApp inbound against the Twilio floor route (which takes a `whatsapp:` To unchanged),
    HumanLayer create + poll against SET NX + GET, Slack status and streaming against the plain Slack path."""
    results = http_ingest.measure(bench, ("whatsapp",), tag="-wa")
    bench.raw["newpaths"] = results
    sec = http_ingest.section(results, bench.options)
    sec.title = "10. This round's new paths: WhatsApp inbound, HumanLayer create + poll, Slack status and streaming"
    sec.setup = (
        "As scenario 1, for Twilio's WhatsApp webhook: the same `POST /twilio/sms` with `whatsapp:` From and To. "
        "Floor: scenario 1's Twilio route (verify, validate, one XADD), which accepts these as they are. frontdesk: the real app, "
        "which routes the request to the WhatsApp channel by the address's scheme."
    )
    bench.sections.append(sec)
    row = sec.rows[0]
    _summary(
        summary,
        "10",
        f"WhatsApp inbound: {row.frontdesk.show()} req/s = {row.ratio or 0:.2f}× floor",
        row.target,
        row.met,
    )
    hl = _humanlayer(bench)
    bench.raw["humanlayer"] = hl
    f, d = Series([r["rate"] for r in hl["floor"]]), Series([r["rate"] for r in hl["frontdesk"]])
    ratio = ratio_series(d.values, f.values)
    sec.setup += (
        f" HumanLayer API: {HL_CALLERS} callers in the harness process (httpx), each creating a function call "
        "(`POST /humanlayer/v1/function_calls`) and reading it back (`GET …/{call_id}`), a new call id each time, "
        f"{bench.options.duration:g} s per run, alternating. Floor (`benchmarks/floors/http.py`): validate, SET NX the call as JSON, GET it. "
        "frontdesk: the real routes (the call becomes a thread, created by ThreadStore.create; "
        "FRONTDESK_HUMANLAYER_DEFAULT_CONTACT=slack:C0BENCH, no worker)."
    )
    sec.rows += [
        Row(
            "HumanLayer create + poll",
            "pairs/s",
            f,
            d,
            "≥ 1.0× floor",
            met=ratio.median >= 1.0,
            ratio=ratio.median,
            note=f"run ratios {ratio.show('{:.2f}')}",
        ),
        Row(
            "HumanLayer create + poll: p50",
            "ms",
            Series([r["p50_ms"] for r in hl["floor"]]),
            Series([r["p50_ms"] for r in hl["frontdesk"]]),
            fmt="{:.1f}",
        ),
    ]
    _summary(
        summary,
        "10",
        f"HumanLayer create + poll: {d.show()} pairs/s = {ratio.median:.2f}× floor",
        "≥ 1.0× floor",
        ratio.median >= 1.0,
    )
    _slack_rows(bench, sec, summary)


HL_CALLERS = 10
SLACK_RATE = 50.0  # mentions per second, as scenario 5
SLACK_PLAIN = {"FRONTDESK_SLACK_STATUS": "off", "FRONTDESK_SLACK_STREAM": "false"}
SLACK_FEATURED = {"FRONTDESK_SLACK_STATUS": "all", "FRONTDESK_SLACK_STREAM": "true"}


def _slack_rows(bench: Bench, sec: Section, summary: list[str]) -> None:
    """Slack status and streaming on, against frontdesk's own Slack path with both off."""
    sl = _slack_features(bench)
    bench.raw["slack_features"] = sl
    sec.setup += (
        f" Slack status and streaming: scenario 5's Slack path ({SLACK_RATE:g} mentions/s for {bench.options.duration:g} s "
        "after a warm-up round, the HTTP app and `frontdesk worker`, a fresh Redis each), measured to the reply's arrival at the fake "
        "Slack API (`chat.postMessage`, or `chat.startStream` when streaming). Floor: frontdesk itself with "
        "FRONTDESK_SLACK_STATUS=off and FRONTDESK_SLACK_STREAM=false; against it, FRONTDESK_SLACK_STATUS=all (the thread status "
        "set as each step starts and cleared as it ends) and FRONTDESK_SLACK_STREAM=true (the answer as startStream + stopStream). "
        "Slack calls per message are counted at the fake, 0.5 s after the last reply."
    )
    plain, featured = sl["plain"], sl["featured"]
    ratios = {key: ratio_series([r[key] for r in featured], [r[key] for r in plain]) for key in ("p50", "p99")}
    for key, lat in ratios.items():
        sec.rows.append(
            Row(
                f"Slack mention → reply, status and streaming on: {key}",
                "ms",
                Series([r[key] for r in plain]),
                Series([r[key] for r in featured]),
                "≤ 1.5× off" if key == "p50" else "",
                met=lat.median <= 1.5 if key == "p50" else None,
                fmt="{:.1f}",
                ratio=lat.median,
                note=f"run ratios {lat.show('{:.2f}')}",
            )
        )
    sec.rows.append(
        Row(
            "Slack calls per message (reaction, posts, status, stream)",
            "calls",
            Series([r["slack_calls"] for r in plain]),
            Series([r["slack_calls"] for r in featured]),
            fmt="{:.1f}",
            note="; ".join(f"{m} {n}" for m, n in sorted(featured[-1]["slack_methods"].items())) if featured else "",
        )
    )
    p50 = ratios["p50"].median
    _summary(summary, "10", f"Slack status + streaming on ÷ off, reply p50: {p50:.2f}×", "≤ 1.5×", p50 <= 1.5)


def _slack_features(bench: Bench) -> dict[str, list[dict]]:
    """Scenario 5's Slack path with status and streaming off, then on (the order alternates by run)."""
    out: dict[str, list[dict]] = {"plain": [], "featured": []}
    sides = {"plain": SLACK_PLAIN, "featured": SLACK_FEATURED}
    for i in range(bench.options.runs):
        for side in sorted(sides, reverse=bool(i % 2)):
            got = e2e.measure(bench, rate=SLACK_RATE, kinds=("slack",), runs=1, tag=f"-{side}{i}", **sides[side])
            out[side] += got["slack"]
    return out


def _humanlayer(bench: Bench) -> dict[str, list[dict]]:
    """The floor and frontdesk on one Redis, as scenario 1; runs alternate."""
    out: dict[str, list[dict]] = {"floor": [], "frontdesk": []}
    with redis_server(bench.dir, appendonly=True, name="redis-humanlayer") as (rurl, _):
        env = bench.env(rurl, FRONTDESK_HUMANLAYER_DEFAULT_CONTACT="slack:C0BENCH")
        with (
            bench.http_server("floor", bench.floor_env(rurl), "floor-http-hl") as (floor, _f),
            bench.http_server("frontdesk", env, "frontdesk-http-hl") as (desk, _d),
        ):
            sides = {"floor": floor, "frontdesk": desk}
            for side, url in sides.items():  # warm up
                humanlayer.run(url, seconds=1, concurrency=HL_CALLERS, tag=f"w{side}{time.time_ns()}")
            for i in range(bench.options.runs):
                for side, url in sides.items():
                    tag = f"{side}{i}{time.time_ns()}"
                    out[side].append(
                        humanlayer.run(url, seconds=bench.options.duration, concurrency=HL_CALLERS, tag=tag)
                    )
    return out


# ---------------------------------------------------------------- 8


def peer_side_by_side(bench: Bench, summary: list[str]) -> None:
    """OpenClaw and frontdesk on the same Slack path and fakes; the ratios are OpenClaw ÷ frontdesk."""
    why = peer.missing()
    title = "8. The peer: OpenClaw beside frontdesk (Slack mention → threaded reply)"
    if why:
        bench.sections.append(Section(title=title, setup=f"Not run: {why}."))
        _summary(summary, "8", f"not run: {why}", "", None)
        return
    runs = min(bench.options.runs, PEER_RUNS)
    try:
        results = peer.measure(bench, runs)
    except RuntimeError as error:  # the peer's failure is a finding of the run, not a crash of the other scenarios
        first = str(error).splitlines()[0]
        bench.sections.append(Section(title=title, setup=f"Failed, no figures: {error}"))
        _summary(summary, "8", f"failed: {first}", "", None)
        return
    bench.raw["peer"] = results
    sec = Section(
        title=title,
        setup=(
            f"OpenClaw {peer.OPENCLAW_VERSION} (Node {peer.NODE_VERSION}, its Slack plugin in HTTP mode) and frontdesk (the HTTP app + `frontdesk worker`, "
            "as in scenario 5) on the same fakes: the model answers at once, the Slack Web API is the fake's. Each side alone, started, measured, stopped; "
            f"{runs} run(s) each, alternating. Per side: time from spawn to the first threaded reply; {peer.WARM} warm-up mentions; "
            f"{peer.SEQUENTIAL} mentions one after another; {peer.LOADED} with {peer.IN_FLIGHT} in flight (each sender sends its next mention when its reply is in). "
            "Latency: signed `app_mention` POST → `chat.postMessage` in its thread at the fake. CPU and RSS: every process of the side's tree. "
            "Configuration of each side and what each does on the path: the notes above (OpenClaw)."
        ),
        columns=("frontdesk", "OpenClaw"),
    )
    fd, oc = results["frontdesk"], results["peer"]

    def pair(key: str) -> tuple[Series, Series]:
        return Series([r[key] for r in fd]), Series([r[key] for r in oc])

    goals = {  # key: (target on OpenClaw ÷ frontdesk, met?)
        "seq_p50": ("≥ 10×", lambda r: r >= 10),
        "load_p50": ("≥ 10×", lambda r: r >= 10),
        "rate": ("≤ 0.1× (frontdesk ≥ 10×)", lambda r: r <= 0.1),
        "cpu_ms_load": ("≥ 10×", lambda r: r >= 10),
        "rss_after": ("≥ 5×", lambda r: r >= 5),
    }
    for key, what, unit, fmt in (
        ("seq_p50", "Latency, sequential: p50", "ms", "{:,.1f}"),
        ("seq_p99", "Latency, sequential: p99", "ms", "{:,.1f}"),
        ("load_p50", f"Latency, {peer.IN_FLIGHT} in flight: p50", "ms", "{:,.1f}"),
        ("load_p99", f"Latency, {peer.IN_FLIGHT} in flight: p99", "ms", "{:,.1f}"),
        ("rate", f"Throughput, {peer.IN_FLIGHT} in flight", "msg/s", "{:,.1f}"),
        ("cpu_ms_seq", "CPU per message, sequential", "ms", "{:,.2f}"),
        ("cpu_ms_load", f"CPU per message, {peer.IN_FLIGHT} in flight", "ms", "{:,.2f}"),
        ("rss_idle", "RSS, idle after warm-up", "MiB", "{:,.0f}"),
        ("rss_after", "RSS after the load", "MiB", "{:,.0f}"),
        ("ready_s", "Time to ready (spawn → first threaded reply)", "s", "{:,.1f}"),
    ):
        a, b = pair(key)
        row = Row(what, unit, a, b, fmt=fmt, note="ratio: OpenClaw ÷ frontdesk" if key == "seq_p50" else "")
        if key in goals and row.ratio is not None:
            row.target, check = goals[key]
            row.met = check(row.ratio)
            _summary(
                summary,
                "8",
                f"{what}: frontdesk {a.show(fmt)} {unit}, OpenClaw {b.show(fmt)} {unit} = {row.ratio:.2f}×",
                row.target,
                row.met,
            )
        sec.rows.append(row)
    for label, runs_of in (("frontdesk", fd), ("OpenClaw", oc)):
        calls = ", ".join(f"{m} {n:.2g}" for m, n in runs_of[-1]["slack_calls"].items())
        sec.notes.append(
            f"Per message, {label} (last run): model calls {runs_of[-1]['model_calls']:.2g} "
            f"({runs_of[-1]['model_request_bytes']:,.0f} bytes of request body each); Slack Web API calls: {calls}. "
            f"Mentions answered 429 and retried: {sum(r['refused'] for r in runs_of)} in all."
        )
    bench.sections.append(sec)


RUNNERS = {
    "ingest": ingest,
    "cores": cores,
    "smtp": smtp,
    "steps": agent_steps,
    "inflight": inflight,
    "e2e": end_to_end,
    "aof": aof,
    "memory": mem,
    "length": length,
    "stored": stored,
    "cluster": cluster,
    "newpaths": new_paths,
    "peer": peer_side_by_side,
}


if __name__ == "__main__":
    sys.exit(main())
