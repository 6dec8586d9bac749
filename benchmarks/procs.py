"""The processes a benchmark starts: Redis, servers, workers, load generators.

Every process is started here in a session of its own and stopped by its pid
(SIGTERM, then SIGKILL after a grace period), never by name: the machine may run
other people's Redis and Python processes. Output goes to a log file under the
run directory, so a failed start can be read afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from gateway.store.embedded import redis_executable

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Variables of the surrounding shell that would change what a child process does.
_OWN_PREFIXES = ("FRONTDESK_", "SLACK_", "TWILIO_", "OPENAI_", "ANTHROPIC_", "OTEL_", "BENCH_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**values: object) -> dict[str, str]:
    """The surrounding environment without our own settings, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in values.items()})
    return env


class Proc:
    """One child process, its log file, and its CPU and memory as /proc reports them."""

    def __init__(self, args: list[str], *, env: dict[str, str], logdir: Path, name: str) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        return _cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def tree_cpu_seconds(self) -> float:
        """CPU time of the process, its live descendants, and the children it has reaped."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        for pid in [self.pid, *descendants(self.pid)]:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / ticks
        return total

    def tree_rss_bytes(self) -> int:
        total = 0
        for pid in [self.pid, *descendants(self.pid)]:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def stop(self, grace: float = 10.0, *, descendants_too: bool = False) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: this pid (and, if asked, the pids it spawned) only."""
        if self.popen.poll() is not None:
            return
        spawned = descendants(self.pid) if descendants_too else []
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait()
        for pid in spawned:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, read from /proc (parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(check, *, timeout: float, what: str, proc: Proc | None = None) -> None:
    """Poll `check()` until it is true; fail with the process's last log lines after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: {proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:g} s" + (f":\n{proc.tail()}" if proc else ""))
        time.sleep(0.05)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _redis_conf(data: Path, port: int, *lines: str) -> Path:
    """A redis.conf for a server of ours on loopback: no RDB snapshots, in the foreground, `lines` added."""
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "redis.conf"
    conf.write_text("\n".join(["bind 127.0.0.1", f"port {port}", f"dir {data}", 'save ""', "daemonize no", *lines, ""]))
    return conf


@contextlib.contextmanager
def redis_server(logdir: Path, *, appendonly: bool, name: str = "redis") -> Iterator[tuple[str, Proc]]:
    """A dedicated redis-server (the embedded binary) on a free port; AOF `everysec` or off."""
    port = free_port()
    aof = f"appendonly {'yes' if appendonly else 'no'}"
    conf = _redis_conf(logdir / f"{name}-data", port, aof, "appendfsync everysec")
    proc = Proc([redis_executable(), str(conf)], env=dict(os.environ), logdir=logdir, name=name)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: redis.Redis.from_url(url, socket_timeout=0.5).ping(), timeout=15, what="redis", proc=proc)
        yield url, proc
    finally:
        proc.stop()


def flush(url: str) -> None:
    """Empty the benchmark's Redis between runs, and wait for an AOF rewrite it may start."""
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
        deadline = time.monotonic() + 30
        while client.info("persistence").get("aof_rewrite_in_progress") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.close()


def versions() -> dict[str, str]:
    """Python, redis-server, wrk and the packages on the measured paths."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    out = subprocess.run([redis_executable(), "--version"], capture_output=True, text=True).stdout
    found["redis-server"] = next((p.split("=", 1)[1] for p in out.split() if p.startswith("v=")), out.strip())
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        found["wrk"] = (wrk.stdout or wrk.stderr).split()[1]
    except (OSError, IndexError):
        found["wrk"] = "missing"
    for pkg in (
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "redis",
        "hiredis",
        "slack-bolt",
        "twilio",
        "aiosmtpd",
        "aiohttp",
        "httpx",
        "standardwebhooks",
    ):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "not installed"
    return found


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
    }


def _bus_free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, below the ephemeral range."""
    import random

    for _ in range(500):
        port = random.randint(20000, 40000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


@contextlib.contextmanager
def redis_cluster(logdir: Path, *, masters: int, name: str = "cluster") -> Iterator[tuple[str, list[int]]]:
    """A Redis Cluster of `masters` nodes on loopback, AOF off, slots split evenly; yields (URL, ports).

    Put together with plain commands (CLUSTER ADDSLOTS, CLUSTER MEET), as tests/deploy/redis_procs.py does.
    """
    ports: list[int] = []
    while len(ports) < masters:
        port = _bus_free_port()
        if port not in ports:
            ports.append(port)
    procs = []
    try:
        for port in ports:
            cluster = ("cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 5000")
            conf = _redis_conf(logdir / f"{name}-{port}", port, "appendonly no", *cluster)
            procs.append(
                Proc([redis_executable(), str(conf)], env=dict(os.environ), logdir=logdir, name=f"{name}-{port}")
            )
        clients = [redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) for port in ports]
        for client, proc in zip(clients, procs, strict=True):
            wait_until(client.ping, timeout=15, what="cluster node", proc=proc)
        bounds = [round(i * 16384 / masters) for i in range(masters + 1)]
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)

        def formed() -> bool:
            for client in clients:
                info = client.execute_command("CLUSTER INFO")
                info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}
                state = info.get("cluster_state")
                state = state.decode() if isinstance(state, bytes) else state
                if state != "ok" or int(info.get("cluster_known_nodes", 0)) != masters:
                    return False
            return True

        wait_until(formed, timeout=30, what="cluster")
        for client in clients:
            client.close()
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports), ports
    finally:
        for proc in procs:
            proc.stop()


def flush_nodes(ports: list[int]) -> None:
    """Empty every node of a cluster."""
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            client.flushall()
        finally:
            client.close()
