"""Scenario 2: SMTP ingest, 20 clients sending 3 KB messages, against a bare aiosmtpd handler.

frontdesk runs as `frontdesk smtp` (the real process role); the floor parses each
message completely with `policy.default` and XADDs it. Both on uvloop, as the CLI runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from benchmarks.harness import Bench, Section
from benchmarks.loadgen.smtp import message
from benchmarks.procs import PYTHON, Proc, child_env, flush, free_port, listening, redis_server, wait_until
from benchmarks.stats import Row, Series, ratio_series

FRONTDESK = [str(Path(PYTHON).with_name("frontdesk"))]  # the console script, as deployed


def _load(bench: Bench, port: int, duration: float, tag: str) -> dict:
    o = bench.options
    args = [
        PYTHON,
        "-m",
        "benchmarks.loadgen.smtp",
        "--port",
        str(port),
        "--clients",
        str(o.smtp_clients),
        "--duration",
        str(duration),
        "--tag",
        tag,
    ]
    done = subprocess.run(args, capture_output=True, text=True, env=child_env(), timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"smtp load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(bench: Bench) -> dict[str, list[dict]]:
    o = bench.options
    out: dict[str, list[dict]] = {"floor": [], "frontdesk": []}
    with redis_server(bench.dir, appendonly=True, name="redis-smtp") as (rurl, rproc):
        floor_port = free_port()
        floor = Proc(
            [PYTHON, "-m", "benchmarks.floors.smtp", "--port", str(floor_port), "--redis", rurl],
            env=child_env(),
            logdir=bench.dir,
            name="floor-smtp",
        )
        desk_port = free_port()
        desk = Proc(
            [*FRONTDESK, "smtp"],
            env=bench.env(rurl, FRONTDESK_SMTP_PORT=desk_port),
            logdir=bench.dir,
            name="frontdesk-smtp",
        )
        try:
            wait_until(lambda: listening(floor_port), timeout=30, what="floor smtp", proc=floor)
            wait_until(lambda: listening(desk_port), timeout=60, what="frontdesk smtp", proc=desk)
            sides = {"floor": (floor_port, floor), "frontdesk": (desk_port, desk)}
            for side, (port, _) in sides.items():
                flush(rurl)
                _load(bench, port, o.warmup, f"w{side[0]}")
            for i in range(o.runs):
                for side, (port, proc) in sides.items():
                    flush(rurl)
                    cpu0, rcpu0 = proc.cpu_seconds(), rproc.cpu_seconds()
                    run = _load(bench, port, o.duration, f"{side[0]}{i}")
                    run["cpu_us"] = (proc.cpu_seconds() - cpu0) / max(run["messages"], 1) * 1e6
                    run["redis_cpu_us"] = (rproc.cpu_seconds() - rcpu0) / max(run["messages"], 1) * 1e6
                    if run["errors"]:
                        raise RuntimeError(
                            f"{side} smtp: {run['errors']} refused ({run['first_error']}); see {proc.log}"
                        )
                    out[side].append(run)
        finally:
            floor.stop()
            desk.stop()
    return out


def section(results: dict[str, list[dict]], o) -> Section:
    size = len(message("x", 0)[1])
    f_rate, d_rate = Series([r["rate"] for r in results["floor"]]), Series([r["rate"] for r in results["frontdesk"]])
    ratio = ratio_series(d_rate.values, f_rate.values)
    sec = Section(
        title="2. SMTP ingest",
        setup=(
            f"{o.smtp_clients} SMTP clients (a raw asyncio client in its own process), one connection each, messages of {size:,} bytes "
            f"(multipart/alternative, text + HTML), each with its own Message-ID and sender; {o.duration:g} s per run, {o.runs} runs per side, alternating. "
            "Floor: a bare aiosmtpd handler that parses the whole message with `policy.default` and XADDs it; both on uvloop, as `frontdesk smtp` runs. "
            "frontdesk: the `frontdesk smtp` process (recipient check, size limit, header-level dedupe, raw bytes stored, enqueue; the MIME parse runs in the worker)."
        ),
    )
    sec.rows += [
        Row(
            "Messages accepted",
            "msg/s",
            f_rate,
            d_rate,
            "≥ 1.5× floor",
            met=ratio.median >= 1.5,
            ratio=ratio.median,
            note=f"run ratios {ratio.show('{:.2f}')}",
        ),
        Row(
            "Latency per message (MAIL…250), p50",
            "ms",
            Series([r["p50_ms"] for r in results["floor"]]),
            Series([r["p50_ms"] for r in results["frontdesk"]]),
            fmt="{:.1f}",
        ),
        Row(
            "Latency per message, p99",
            "ms",
            Series([r["p99_ms"] for r in results["floor"]]),
            Series([r["p99_ms"] for r in results["frontdesk"]]),
            fmt="{:.1f}",
        ),
        Row(
            "Server CPU per message",
            "µs",
            Series([r["cpu_us"] for r in results["floor"]]),
            Series([r["cpu_us"] for r in results["frontdesk"]]),
        ),
        Row(
            "Redis CPU per message",
            "µs",
            Series([r["redis_cpu_us"] for r in results["floor"]]),
            Series([r["redis_cpu_us"] for r in results["frontdesk"]]),
        ),
    ]
    return sec
