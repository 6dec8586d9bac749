"""Throwaway Redis topologies on loopback for tests: a 3-master Cluster, a master with a Sentinel.

Each is real redis-server processes (the binary the embedded Redis uses), on free
ports, with their files in a temporary directory; the processes this module
started are killed (by pid) when the block ends. The cluster is put together
with plain commands (CLUSTER ADDSLOTS, CLUSTER MEET), so no redis-cli is needed.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from helpers import free_port

from gateway.store.embedded import redis_executable

HOST = "127.0.0.1"
SLOTS = 16384


def _wait(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def _servers(confs: list[tuple[Path, list[str]]]) -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    try:
        for conf, extra in confs:
            procs.append(
                subprocess.Popen(
                    [redis_executable(), str(conf), *extra],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def _write_conf(directory: Path, port: int, *lines: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "redis.conf"
    conf.write_text(
        "\n".join(
            [f"bind {HOST}", f"port {port}", f"dir {directory}", 'save ""', "appendonly no", "daemonize no", *lines, ""]
        )
    )
    return conf


def _client(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=1)


@contextlib.contextmanager
def redis_cluster(tmp: Path, masters: int = 3) -> Iterator[list[int]]:
    """Start `masters` cluster nodes, give each a third of the slots, join them; yield their ports."""
    ports: list[int] = []
    for _ in range(masters):
        port = free_port(bus=True)
        while port in ports:
            port = free_port(bus=True)
        ports.append(port)
    confs = [
        (
            _write_conf(
                tmp / f"node{port}",
                port,
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 5000",
            ),
            [],
        )
        for port in ports
    ]
    with _servers(confs):
        clients = [_client(port) for port in ports]
        try:
            for client in clients:
                _wait(client.ping, "a cluster node did not start")
            bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
            for i, client in enumerate(clients):
                client.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
            for port in ports[1:]:
                clients[0].execute_command("CLUSTER MEET", HOST, port)

            def formed() -> bool:
                for client in clients:
                    info = {_text(k): _text(v) for k, v in client.execute_command("CLUSTER INFO").items()}
                    if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != masters:
                        return False
                return True

            _wait(formed, "the cluster did not form")
            yield ports
        finally:
            for client in clients:
                client.close()


@contextlib.contextmanager
def redis_sentinel(tmp: Path, service: str = "frontdesk") -> Iterator[tuple[int, int]]:
    """Start a master and one Sentinel watching it as `service`; yield (master port, sentinel port)."""
    master_port, sentinel_port = free_port(), free_port()
    master = _write_conf(tmp / "master", master_port)
    sentinel = _write_conf(
        tmp / "sentinel",
        sentinel_port,
        f"sentinel monitor {service} {HOST} {master_port} 1",
        f"sentinel down-after-milliseconds {service} 5000",
    )
    with _servers([(master, []), (sentinel, ["--sentinel"])]):
        master_client, sentinel_client = _client(master_port), _client(sentinel_port)
        try:
            _wait(master_client.ping, "the master did not start")
            _wait(
                lambda: sentinel_client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service),
                "the sentinel did not start",
            )
            yield master_port, sentinel_port
        finally:
            master_client.close()
            sentinel_client.close()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
