"""Schemathesis against the OpenAPI of /api/v1, /webhooks and /humanlayer/v1: no 5xx, no hang.

The real app is served over HTTP on loopback with a real Redis and every channel
on; schemathesis runs in a subprocess (its CLI), so its own pytest plugin and
event loop stay out of this process — pytest-asyncio and filterwarnings=error
are unaffected. Each request is bounded by --request-timeout (a hang fails the
run); the default run is 50 examples per operation, the slow one 1000.

Schemathesis is in the `test` extra; where it is not installed the test skips.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "security"))
from plugins import ApprovalAgent, EchoAgent
from seckit import API_TOKEN, stack

from agents.humanlayer import HumanLayerAgent

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("schemathesis") is None, reason="schemathesis is not installed (pip install -e '.[test]')"
)

RUN_TIMEOUT = 600  # seconds: bounds a broken run, measures nothing
MARKERS = ("/api/v1/", "/webhooks/", "/humanlayer/v1/")


async def _schemathesis(
    url: str, report: Path, examples: int, *extra: str, config: Path | None = None
) -> tuple[int, str]:
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        *(["--config-file", str(config)] if config else []),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(examples),
        "--request-timeout",
        "10",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--seed",
        os.environ.get("FRONTDESK_FUZZ_SEED", "20240603"),
        "--include-path-regex",
        "^/(api/v1|webhooks|humanlayer/v1)/",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        *extra,
    ]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=report.parent
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"schemathesis did not finish within {RUN_TIMEOUT} s") from None
    return process.returncode, out.decode("utf-8", "replace")


def _operations(report: Path) -> set[str]:
    """The operations the run exercised, from its ndjson event log."""
    seen = set()
    for line in report.read_text().splitlines():
        text = json.dumps(json.loads(line))
        for marker in MARKERS:
            if marker in text:
                seen.add(marker)
    return seen


# Known ids, so that part of the examples reach past the 404s into the handlers' own logic.
CONFIG = """
[dictionaries.agents]
values = ["echo", "approver"]
[dictionaries.threads]
values = [{threads}]
[dictionaries.calls]
values = ["call-1", "hl-call-1", "hl-contact-1"]
[parameters]
"body.agent" = {{ dictionary = "agents", probability = 0.7 }}
"path.agent" = {{ dictionary = "agents", probability = 0.7 }}
"path.thread_id" = {{ dictionary = "threads", probability = 0.7 }}
"path.call_id" = {{ dictionary = "calls", probability = 0.7 }}
"body.call_id" = "call-1"
"""


async def _waiting_threads(s) -> list[str]:
    """A thread waiting for an answer and one waiting for an approval."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    ids = []
    async with s.workers():
        for agent, status in (("echo", "waiting_human"), ("approver", "waiting_approval")):
            r = await s.http.post("/api/v1/threads", json={"agent": agent, "text": "1.2.3"}, headers=auth)
            ids.append(r.json()["id"])
            await s.wait_status(ids[-1], status)
        # A pending HumanLayer approval and question (gateway/humanlayer), for the reads and responds to reach.
        slack = {"slack": {"channel_or_user_id": "C1"}}
        calls = {
            "function_calls": {
                "run_id": "r",
                "call_id": "hl-call-1",
                "spec": {"fn": "f", "kwargs": {}, "channel": slack},
            },
            "contact_requests": {"run_id": "r", "call_id": "hl-contact-1", "spec": {"msg": "?", "channel": slack}},
        }
        for path, body in calls.items():
            r = await s.http.post(f"/humanlayer/v1/{path}", json=body, headers=auth)
            assert r.status_code == 200, r.text
    return ids


async def _run(redis_url, prefix, tmp_path, examples: int) -> None:
    # Private callbacks refused: fuzzed callback URLs must not reach this machine.
    agents = [EchoAgent(), ApprovalAgent(), lambda rt: HumanLayerAgent(rt)]
    async with stack(redis_url, prefix, tmp_path, agents=agents, callback_allow_private=False) as s:
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG.format(threads=", ".join(f'"{t}"' for t in await _waiting_threads(s))))
        report = tmp_path / "schemathesis.ndjson"
        # With the token: the handlers behind authentication are what is fuzzed.
        code, out = await _schemathesis(
            s.url, report, examples, "--header", f"Authorization: Bearer {API_TOKEN}", config=config
        )
        assert code == 0, out[-6000:]
        assert _operations(report) == set(MARKERS), out[-2000:]
        # Without it: every operation refuses, and still never with a 5xx.
        code, out = await _schemathesis(
            s.url, tmp_path / "anonymous.ndjson", max(5, examples // 10), "--phases", "examples,fuzzing"
        )
        assert code == 0, out[-6000:]


async def test_no_operation_answers_5xx(redis_url, prefix, tmp_path):
    await _run(redis_url, prefix, tmp_path, 50)


@pytest.mark.slow
async def test_no_operation_answers_5xx_long(redis_url, prefix, tmp_path):
    await _run(redis_url, prefix, tmp_path, 1000)
