"""Scenario 1: signed HTTP ingest (webhook, Slack event, Twilio SMS) against the naive floor.

Both servers run side by side on one Redis; runs alternate floor, frontdesk,
floor, ... so that each pair shares the machine's state. Redis is emptied before
every run, and each run's requests are signed afresh with ids of their own.
"""

from __future__ import annotations

import contextlib
import resource
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from benchmarks.harness import PUBLIC_URL, Bench, Section
from benchmarks.loadgen.wrk import KINDS, run_wrk, write_requests
from benchmarks.procs import PYTHON, Proc, flush, free_port, redis_server, wait_until
from benchmarks.stats import Row, Series, ratio_series

LABEL = {
    "webhook": "Webhook `POST /webhooks/{agent}`",
    "slack": "Slack `POST /slack/events` (app_mention)",
    "sms": "Twilio `POST /twilio/sms`",
    "whatsapp": "WhatsApp `POST /twilio/sms` (`whatsapp:` To)",
}


def measure(
    bench: Bench, kinds: tuple[str, ...] = KINDS, *, aof: bool = True, tag: str = ""
) -> dict[str, dict[str, list[dict]]]:
    """{kind: {"floor": [run...], "frontdesk": [run...]}} — wrk's summaries plus CPU per request."""
    o = bench.options
    results: dict[str, dict[str, list[dict]]] = {}
    with redis_server(bench.dir, appendonly=aof, name=f"redis-ingest{tag}") as (rurl, rproc):
        with (
            bench.http_server("floor", bench.floor_env(rurl), f"floor-http{tag}") as floor,
            bench.http_server("frontdesk", bench.env(rurl), f"frontdesk-http{tag}") as desk,
        ):
            sides = {"floor": floor, "frontdesk": desk}
            for kind in kinds:
                results[kind] = {"floor": [], "frontdesk": []}
                rates = {}
                for side, (url, _proc) in sides.items():  # warm up, and learn how many requests a run needs
                    flush(rurl)
                    file = bench.dir / f"warm-{kind}-{side}.tsv"
                    write_requests(file, kind, 20_000, bench.keys, PUBLIC_URL, f"w{side[0]}{tag}")
                    rates[side] = run_wrk(url, file, duration=o.warmup, connections=o.connections)["rps"]
                for i in range(o.runs):
                    for side, (url, proc) in sides.items():
                        flush(rurl)
                        n = int(rates[side] * o.duration * 2) + 5000  # the warm-up underestimates a warm server
                        file = bench.dir / f"{kind}-{side}.tsv"
                        write_requests(file, kind, n, bench.keys, PUBLIC_URL, f"{side[0]}{i}{tag}{int(time.time())}")
                        run = _one(url, file, proc, rproc, o.duration, o.connections)
                        results[kind][side].append(run)
    return results


def one_run(
    bench: Bench, kind: str, url: str, proc: Proc, rurl: str, rproc: Proc, tag: str, *, duration: float
) -> dict:
    """One run on an emptied Redis, with a request file sized from a quick probe of the server's rate."""
    flush(rurl)
    probe = bench.dir / f"probe-{kind}-{tag}.tsv"
    write_requests(probe, kind, 10_000, bench.keys, PUBLIC_URL, f"p{tag}")
    rate = run_wrk(url, probe, duration=1, connections=bench.options.connections)["rps"]
    flush(rurl)
    file = bench.dir / f"{kind}-{tag}.tsv"
    write_requests(file, kind, int(rate * duration * 2) + 5000, bench.keys, PUBLIC_URL, f"{tag}{int(time.time())}")
    return _one(url, file, proc, rproc, duration, bench.options.connections)


def _one(url: str, file, proc: Proc, rproc: Proc, duration: float, connections: int) -> dict:
    cpu0, rcpu0, wrk0 = proc.tree_cpu_seconds(), rproc.cpu_seconds(), _children_cpu()
    run = run_wrk(url, file, duration=duration, connections=connections)
    cpu1, rcpu1, wrk1 = proc.tree_cpu_seconds(), rproc.cpu_seconds(), _children_cpu()
    run["cpu_us"] = (cpu1 - cpu0) / max(run["requests"], 1) * 1e6
    run["redis_cpu_us"] = (rcpu1 - rcpu0) / max(run["requests"], 1) * 1e6
    run["wrk_cpu_us"] = (wrk1 - wrk0) / max(run["requests"], 1) * 1e6  # the only child reaped meanwhile: wrk
    run["rss"] = proc.rss_bytes()
    if run["errors"]:
        raise RuntimeError(f"{url}: {run['errors']} errors in a run ({run}); see {proc.log}")
    return run


def section(results: dict[str, dict[str, list[dict]]], o) -> Section:
    sec = Section(
        title="1. Webhook ingest (signed HTTP, verify → validate → dedupe → enqueue)",
        setup=(
            f"wrk, 1 thread, {o.connections} connections, {o.duration:g} s per run after a {o.warmup:g} s warm-up, "
            f"{o.runs} runs per side, alternating floor and frontdesk; each request has its own id, signed in advance. "
            "Server: one uvicorn process, uvloop + httptools, no access log, for both. Redis: dedicated, AOF everysec, emptied before each run. "
            "Floor: a bare FastAPI route per provider that verifies the provider's HMAC, validates a pydantic model and awaits one XADD "
            "(redis-py's default pool). frontdesk: the real app (`create_app`), every channel on."
        ),
    )
    for kind, sides in results.items():
        floor, desk = sides["floor"], sides["frontdesk"]
        f_rps, d_rps = Series([r["rps"] for r in floor]), Series([r["rps"] for r in desk])
        ratio = ratio_series(d_rps.values, f_rps.values)
        p99 = Series([r["p99_us"] / 1000 for r in desk])
        sec.rows += [
            Row(
                f"{LABEL[kind]}: throughput",
                "req/s",
                f_rps,
                d_rps,
                "≥ 1.0× floor",
                met=ratio.median >= 1.0,
                ratio=ratio.median,
                note=f"run ratios {ratio.show('{:.2f}')}",
            ),
            Row(
                f"{LABEL[kind]}: p50",
                "ms",
                Series([r["p50_us"] / 1000 for r in floor]),
                Series([r["p50_us"] / 1000 for r in desk]),
                fmt="{:.1f}",
            ),
            Row(
                f"{LABEL[kind]}: p99",
                "ms",
                Series([r["p99_us"] / 1000 for r in floor]),
                p99,
                "≤ 15 ms",
                met=p99.median <= 15,
                fmt="{:.1f}",
            ),
            Row(
                f"{LABEL[kind]}: server CPU per request",
                "µs",
                Series([r["cpu_us"] for r in floor]),
                Series([r["cpu_us"] for r in desk]),
            ),
            Row(
                f"{LABEL[kind]}: Redis CPU per request",
                "µs",
                Series([r["redis_cpu_us"] for r in floor]),
                Series([r["redis_cpu_us"] for r in desk]),
            ),
        ]
        wraps = sum(r["wraps"] for r in floor + desk)
        if wraps:
            sec.notes.append(
                f"{kind}: some runs outlasted their request file and replayed ids ({wraps} wraps): those requests took the dedupe path."
            )
    return sec


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- 1 vs N gateway processes

PROCESSES = (1, 2)
FRONTDESK = str(Path(PYTHON).with_name("frontdesk"))


@contextlib.contextmanager
def serve_processes(bench: Bench, rurl: str, processes: int, name: str) -> Iterator[tuple[str, Proc]]:
    """`frontdesk serve --workers N`, the command a deployment runs, on a free port."""
    port = free_port()
    env = bench.env(rurl, FRONTDESK_HTTP_PORT=port, FRONTDESK_HTTP_WORKERS=processes)
    proc = Proc([FRONTDESK, "serve"], env=env, logdir=bench.dir, name=name)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: urllib.request.urlopen(url + "/healthz", timeout=1).status == 200, timeout=60, what=name, proc=proc
        )
        yield url, proc
    finally:
        proc.stop()


def measure_processes(bench: Bench, kind: str = "webhook") -> dict[int, list[dict]]:
    """{processes: [run...]}: `kind` ingest on 1 and on N gateway processes, runs alternating."""
    o = bench.options
    results: dict[int, list[dict]] = {n: [] for n in PROCESSES}
    with redis_server(bench.dir, appendonly=True, name="redis-cores") as (rurl, rproc):
        with contextlib.ExitStack() as stack:
            servers = {n: stack.enter_context(serve_processes(bench, rurl, n, f"serve-{n}p")) for n in PROCESSES}
            for n, (url, proc) in servers.items():  # warm up every process of each
                one_run(bench, kind, url, proc, rurl, rproc, f"warm{n}p", duration=o.warmup)
            for i in range(o.runs):
                for n, (url, proc) in servers.items():
                    results[n].append(one_run(bench, kind, url, proc, rurl, rproc, f"{n}p{i}", duration=o.duration))
    return results


def processes_section(results: dict[int, list[dict]], o, cores: int) -> Section:
    one, many = PROCESSES[0], PROCESSES[-1]
    sec = Section(
        title=f"1b. Webhook ingest on {one} vs {many} gateway processes (`frontdesk serve --workers N`)",
        setup=(
            f"`frontdesk serve` with FRONTDESK_HTTP_WORKERS={one} and ={many}, both up, runs alternating; wrk as in scenario 1 "
            f"({o.connections} connections, one thread), one Redis (AOF everysec). {cores} cores for everything: the gateway "
            "processes, Redis and wrk. CPU per request: the server's is the parent's and its children's together; the whole "
            "is server + Redis + wrk, so cores ÷ whole is the most this machine could take whatever the server did."
        ),
        columns=(f"{one} process", f"{many} processes"),
    )
    per = {n: results[n] for n in PROCESSES}

    def series(n: int, key: str, scale: float = 1.0) -> Series:
        return Series([r[key] * scale for r in per[n]])

    rps_ratio = ratio_series(series(many, "rps").values, series(one, "rps").values)
    target = 0.8 * many
    whole = {n: Series([r["cpu_us"] + r["redis_cpu_us"] + r["wrk_cpu_us"] for r in per[n]]) for n in PROCESSES}
    sec.rows += [
        Row(
            "Throughput",
            "req/s",
            series(one, "rps"),
            series(many, "rps"),
            f"≥ {target:.1f}× one process",
            met=rps_ratio.median >= target,
            ratio=rps_ratio.median,
            note=f"run ratios {rps_ratio.show('{:.2f}')}",
        ),
        Row("p99", "ms", series(one, "p99_us", 1e-3), series(many, "p99_us", 1e-3), fmt="{:.1f}"),
        Row("Server CPU per request", "µs", series(one, "cpu_us"), series(many, "cpu_us")),
        Row("Redis CPU per request", "µs", series(one, "redis_cpu_us"), series(many, "redis_cpu_us")),
        Row("wrk CPU per request", "µs", series(one, "wrk_cpu_us"), series(many, "wrk_cpu_us")),
        Row("All CPU per request (server + Redis + wrk)", "µs", whole[one], whole[many]),
        Row(
            f"Ceiling on {cores} cores: cores ÷ all CPU per request",
            "req/s",
            Series([cores / v * 1e6 for v in whole[one].values]),
            Series([cores / v * 1e6 for v in whole[many].values]),
        ),
    ]
    return sec
