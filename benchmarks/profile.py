"""CPU profiles of a running process with py-spy (sampling, from outside, no code change).

py-spy is not a dependency of frontdesk: `make bench` installs it into
`.bench-tools/` (pip --target) and the harness looks there, then at BENCH_PYSPY,
then on PATH. Without it, the profiles are skipped and RESULTS.md says so.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
from pathlib import Path

from benchmarks.procs import REPO

# Where a sampled frame's file says its time went (py-spy names files relative to sys.path).
GROUPS = (
    ("frontdesk: gateway/", "(gateway/"),
    ("frontdesk: agents/", "(agents/"),
    ("frontdesk: channels/", "(channels/"),
    ("redis-py", "(redis/"),
    ("openai SDK", "(openai/"),
    ("httpx / httpcore / h11", ("(httpx/", "(httpcore/", "(h11/", "(anyio/")),
    ("pydantic", ("(pydantic/", "(pydantic_core/")),
    ("jinja2", "(jinja2/"),
    ("yaml", "(yaml/"),
    ("structlog / logging", ("(structlog/", "(logging/")),
    ("json", "(json/"),
    ("asyncio event loop", ("(asyncio/", "uvloop")),
    ("fastapi / starlette / uvicorn", ("(fastapi/", "(starlette/", "(uvicorn/")),
    ("email / aiosmtpd", ("(email/", "(aiosmtpd/")),
)


def executable() -> str | None:
    for candidate in (
        os.environ.get("BENCH_PYSPY"),
        str(REPO / ".bench-tools" / "bin" / "py-spy"),
        shutil.which("py-spy"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def start(pid: int, out: Path, seconds: float) -> subprocess.Popen | None:
    exe = executable()
    if exe is None:
        return None
    args = [
        exe,
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(seconds)),
        "-r",
        "250",
        "-f",
        "raw",
        "-o",
        str(out),
        "--nonblocking",
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(spy: subprocess.Popen) -> None:
    """Let py-spy write its file (SIGINT ends a recording early and still writes it)."""
    if spy.poll() is None:
        os.kill(spy.pid, signal.SIGINT)
    try:
        spy.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(spy.pid, signal.SIGKILL)
        spy.wait()


def _group(frame: str) -> str:
    for name, marks in GROUPS:
        for mark in (marks,) if isinstance(marks, str) else marks:
            if mark in frame:
                return name
    return "other (stdlib, C)"


def summarize(raw: Path, top: int = 15) -> str:
    """Self time by library, and the functions with the most self time, as a text block."""
    if not raw.exists():
        return "(no profile: py-spy is not installed)"
    by_group: collections.Counter[str] = collections.Counter()
    by_frame: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        leaf = stack.split(";")[-1]
        # Frames name their file relative to site-packages or the repo; keep it short.
        by_group[_group(leaf)] += n
        by_frame[leaf.replace(str(REPO) + "/", "")] += n
        total += n
    if not total:
        return "(empty profile)"
    lines = [f"{total} samples (250 Hz, busy time only). Self time by library:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_group.most_common()]
    lines.append(f"Top {top} functions by self time:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in by_frame.most_common(top)]
    return "\n".join(lines)
