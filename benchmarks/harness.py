"""What every scenario shares: options, the run directory, the fakes, and how servers are started."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.loadgen.wrk import AGENT, Secrets
from benchmarks.procs import PYTHON, Proc, child_env, free_port, listening, wait_until
from benchmarks.stats import Row

PUBLIC_URL = "https://frontdesk.bench"  # what Twilio "called": both servers check signatures against it
PREFIX = "bench"


@dataclass
class Options:
    duration: float = 8.0  # seconds per measured run
    warmup: float = 2.0
    runs: int = 3
    connections: int = 50
    smtp_clients: int = 20
    inflight: int = 1200  # threads started for the model-waiting scenario


@dataclass
class Section:
    """One scenario's results, as RESULTS.md shows them."""

    title: str
    setup: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: str = ""  # preformatted text (a profile)
    columns: tuple[str, str] = ("floor", "frontdesk")


class Bench:
    """A benchmark run: its directory, its secrets, and the loopback fakes."""

    def __init__(self, options: Options, rundir: Path) -> None:
        self.options = options
        self.dir = rundir
        self.keys = Secrets.new()
        self.fakes_url = ""
        self.sections: list[Section] = []
        self.raw: dict[str, object] = {}

    # ------------------------------------------------------------ fakes
    @contextlib.contextmanager
    def fakes(self) -> Iterator[str]:
        port = free_port()
        proc = Proc(
            [PYTHON, "-m", "benchmarks.fakes", "--port", str(port)], env=child_env(), logdir=self.dir, name="fakes"
        )
        try:
            wait_until(lambda: listening(port), timeout=20, what="fakes", proc=proc)
            self.fakes_url = f"http://127.0.0.1:{port}"
            yield self.fakes_url
        finally:
            proc.stop()

    def control(self, *, delay: float = 0.0, turns: int = 1) -> None:
        self._post("/control", {"delay": delay, "turns": turns})

    def stats(self) -> dict:
        return self._get("/stats")

    def arrivals(self) -> list[tuple[str, str, float]]:
        return self._get("/arrivals")

    def _get(self, path: str):
        with urllib.request.urlopen(self.fakes_url + path, timeout=10) as r:
            return json.loads(r.read())

    def _post(self, path: str, body: dict):
        request = urllib.request.Request(self.fakes_url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read())

    # ------------------------------------------------------------ frontdesk
    def env(self, redis_url: str, **extra: object) -> dict[str, str]:
        """A frontdesk process's environment: every channel on, the model and providers on loopback."""
        values: dict[str, object] = dict(
            FRONTDESK_REDIS_URL=redis_url,
            FRONTDESK_KEY_PREFIX=PREFIX,
            FRONTDESK_DATA_DIR=self.dir / "data",
            FRONTDESK_LOG_FORMAT="json",
            FRONTDESK_DEFAULT_AGENT=AGENT,
            FRONTDESK_WEBHOOK_SECRET=self.keys.webhook,
            FRONTDESK_CALLBACK_ALLOW_PRIVATE="true",
            SLACK_BOT_TOKEN="xoxb-bench",
            SLACK_SIGNING_SECRET=self.keys.slack,
            FRONTDESK_SLACK_API_URL=f"{self.fakes_url}/api/",
            # The reaction is an outbound call made after the answer; ingest is measured without it.
            FRONTDESK_SLACK_ACK_REACTION="",
            TWILIO_ACCOUNT_SID="AC" + "0" * 32,
            TWILIO_AUTH_TOKEN=self.keys.twilio,
            FRONTDESK_TWILIO_API_URL=self.fakes_url,
            FRONTDESK_PUBLIC_URL=PUBLIC_URL,
            FRONTDESK_MODEL="openai:bench",
            OPENAI_BASE_URL=f"{self.fakes_url}/v1",
            OPENAI_API_KEY="bench",
            FRONTDESK_MODEL_RETRIES=0,
            FRONTDESK_SMTP_PORT=free_port(),
            FRONTDESK_OPS_PORT=None,
        )
        values.update(extra)
        return child_env(**{k: v for k, v in values.items() if v is not None})

    def floor_env(self, redis_url: str) -> dict[str, str]:
        return child_env(
            BENCH_REDIS_URL=redis_url,
            BENCH_WEBHOOK_SECRET=self.keys.webhook,
            BENCH_SLACK_SECRET=self.keys.slack,
            BENCH_TWILIO_TOKEN=self.keys.twilio,
            BENCH_PUBLIC_URL=PUBLIC_URL,
        )

    @contextlib.contextmanager
    def http_server(self, app: str, env: dict[str, str], name: str) -> Iterator[tuple[str, Proc]]:
        """`benchmarks.serve <app>` on a free port, up once /healthz answers."""
        port = free_port()
        proc = Proc([PYTHON, "-m", "benchmarks.serve", app, "--port", str(port)], env=env, logdir=self.dir, name=name)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: urllib.request.urlopen(url + "/healthz", timeout=1).status == 200,
                timeout=60,
                what=name,
                proc=proc,
            )
            yield url, proc
        finally:
            proc.stop()
