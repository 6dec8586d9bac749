"""One async Redis client per process, with a capped pool and reconnects.

A capped, blocking pool keeps a burst of requests from opening hundreds of
sockets: under load the p99 of an XADD falls when requests queue for a
connection instead of racing for new ones (measured in benchmarks/).

FRONTDESK_REDIS_URL takes three forms:

    redis://[user:password@]host:port/db             one server (rediss:// for TLS)
    redis+cluster://[user:password@]host:port[,host:port...]
                                                     a Redis Cluster: any reachable nodes; the rest are discovered
    redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]
                                                     the master Sentinel names for `service`, followed on failover

`rediss+cluster://` and `rediss+sentinel://` use TLS (`?ssl_ca_certs=/path` for a
private CA). The user and password in the netloc are the data nodes'; Sentinels
that have their own take `sentinel_username`/`sentinel_password`.

Every client made here, and its pipelines, raise `gateway.errors.Unavailable` for
an outage (from the redis-py error, kept as its cause), whatever the topology: a
loop or a handler catches that one class, and an OSError of its own stays a bug.
A bad command (ResponseError, NOSCRIPT) is not translated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, unquote

import redis.asyncio as aioredis

try:  # a dependency (redis[hiredis]); without it redis-py's own packing is used
    import hiredis

    HIREDIS = True
except ImportError:  # pragma: no cover
    HIREDIS = False
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import ConfigError, Unavailable
from gateway.settings import Settings

# What redis-py raises when Redis is not there right now, as opposed to a bad command.
# On a cluster that includes a node failing over (CLUSTERDOWN), a slot moving
# (TRYAGAIN) or not served; no node reachable at all is translated below. The
# built-in ConnectionError and TimeoutError are OSErrors.
_OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError, SlotNotCoveredError)


_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _translated(method: _Method) -> _Method:
    """`method` (a redis-py coroutine method) raising Unavailable for an outage, the redis-py error as its cause."""

    @functools.wraps(method)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except _OUTAGE as exc:
            raise Unavailable(f"redis unavailable: {str(exc) or type(exc).__name__}") from exc

    return cast(_Method, call)


class _Pipeline(Pipeline):
    execute = _translated(Pipeline.execute)


class _ClusterPipeline(ClusterPipeline):
    execute = _translated(ClusterPipeline.execute)


class _Client(aioredis.Redis):
    """One server's (or Sentinel's master's) client; its commands and pipelines raise Unavailable for an outage."""

    execute_command = _translated(aioredis.Redis.execute_command)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_QUERY = {"sentinel_username", "sentinel_password", "ssl_ca_certs"}


@dataclass(frozen=True)
class RedisTarget:
    """A cluster or Sentinel URL, taken apart."""

    kind: str  # "cluster" | "sentinel"
    nodes: list[tuple[str, int]]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    service: str = ""
    db: int = 0
    options: dict[str, str] = field(default_factory=dict)


def parse_target(url: str) -> RedisTarget | None:
    """The cluster or Sentinel the URL names; None for a plain redis:// URL."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or (scheme not in CLUSTER_SCHEMES and scheme not in SENTINEL_SCHEMES):
        return None
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    user, colon, password = userinfo.partition(":")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - _QUERY
    if unknown:
        raise ConfigError(
            f"FRONTDESK_REDIS_URL: unknown option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_QUERY))})"
        )
    nodes = [_host_port(part) for part in hosts.split(",") if part.strip()]
    if not nodes:
        raise ConfigError("FRONTDESK_REDIS_URL: name at least one host:port")
    common: dict[str, Any] = dict(
        nodes=nodes,
        username=unquote(user) or None,
        password=unquote(password) if colon else None,
        options=options,
    )
    segments = [s for s in path.split("/") if s]
    if scheme in CLUSTER_SCHEMES:
        if segments and segments != ["0"]:
            raise ConfigError("FRONTDESK_REDIS_URL: a Redis Cluster has only database 0")
        return RedisTarget(kind="cluster", tls=CLUSTER_SCHEMES[scheme], **common)
    if not segments or len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ConfigError("FRONTDESK_REDIS_URL: a Sentinel URL ends in /<service name>[/<db>]")
    return RedisTarget(
        kind="sentinel",
        tls=SENTINEL_SCHEMES[scheme],
        service=unquote(segments[0]),
        db=int(segments[1]) if len(segments) == 2 else 0,
        **common,
    )


def redacted(url: str) -> str:
    """The URL without its credentials, for a log line or a banner (every form above)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path.partition('?')[0]}"


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = port, "6379"
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        raise ConfigError(f"FRONTDESK_REDIS_URL: {text!r} is not host:port")
    return host, int(port)


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), 3)


def _common() -> dict:
    """What every client here is made with, whatever the topology."""
    return dict(decode_responses=True, health_check_interval=15, socket_keepalive=True, retry=_retry())


def make_client(url: str, max_connections: int = 64) -> aioredis.Redis:
    target = parse_target(url)
    if target is not None and target.kind == "cluster":
        return _cluster(target, max_connections)
    if target is not None:
        return _sentinel(target, max_connections)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=10,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **_common(),
    )
    pool.connection_class = _packed(pool.connection_class)
    return _Client.from_pool(pool)  # the client owns (and closes) the pool


# Kept reach-in (redis<9 in pyproject), for the figure in the docstring; guarded byte for byte by
# tests/gateway/test_connection_packing.py::test_packed_commands_are_the_bytes_redis_py_sends.
class _HiredisPacking:
    """Commands packed by hiredis (C) where redis-py's async connections pack them in Python.

    redis-py's sync client already does this; its asyncio one does not, and packing the
    arguments of the accept and save scripts (a dozen or more each) was about a tenth of a
    webhook's CPU and of an agent step's (benchmarks/, scenarios 1 and 3). Anything but
    plain str/bytes/int arguments — floats, bools (an error), a command name of two words
    — goes the Python way, so what reaches Redis is byte for byte what it was.
    """

    def pack_command(self, *args):
        for arg in args:
            kind = type(arg)
            if kind is not str and kind is not bytes and kind is not int:
                return super().pack_command(*args)
        if isinstance(args[0], str) and " " in args[0]:
            return super().pack_command(*args)
        return [hiredis.pack_command(args)]


def _packed(cls: type) -> type:
    if not HIREDIS or issubclass(cls, _HiredisPacking):
        return cls
    return type(f"Packed{cls.__name__}", (_HiredisPacking, cls), {})


class _QueuedCluster(RedisCluster):
    """A cluster client whose commands wait for a connection, as the single-node pool's do.

    redis-py's cluster pool raises MaxConnectionsError when a node's connections
    are all busy; here commands queue behind a semaphore instead. Each node's pool
    keeps headroom above it for the pipelines, which take their connections directly.
    """

    def __init__(self, *args, queue: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._queue = asyncio.Semaphore(queue)

    async def _queued(self, *args, **kwargs):
        async with self._queue:
            try:
                return await super().execute_command(*args, **kwargs)
            except RedisClusterException as exc:
                # "cannot be connected" (no node answered) is an outage; a cross-slot command stays a bug.
                if isinstance(exc.__cause__, (RedisConnectionError, RedisTimeoutError, OSError)):
                    raise RedisConnectionError(str(exc)) from exc
                raise

    execute_command = _translated(_queued)

    def pipeline(self, transaction: bool | None = None, shard_hint: str | None = None) -> ClusterPipeline:
        if shard_hint:  # as redis-py's own
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # redis-py builds ClusterPipeline so


def _cluster(target: RedisTarget, max_connections: int) -> aioredis.Redis:
    tls = {"ssl": True, "ssl_ca_certs": target.options.get("ssl_ca_certs")} if target.tls else {}
    client = _QueuedCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        queue=max_connections,
        max_connections=max_connections + 16,
        username=target.username,
        password=target.password,
        **_common(),
        **tls,
    )
    return client  # type: ignore[return-value]  # the same commands; callers use them alike


# Kept reach-in (redis<9 in pyproject): redis-py has no blocking Sentinel pool, and without one a
# burst past max_connections raises instead of waiting. Guarded by
# tests/deploy/test_redis_topologies.py::test_a_thread_runs_through_the_master_sentinel_names.
class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (finds the master, follows a failover) that waits for a free connection."""


class _SentinelClient(_Client):
    """The master's client; closing it closes the connections to the Sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        assert isinstance(pool, SentinelConnectionPool)  # master_for made it so (see _sentinel)
        manager = pool.sentinel_manager
        await super().aclose(close_connection_pool)
        for sentinel in manager.sentinels:
            await sentinel.aclose()


def _sentinel(target: RedisTarget, max_connections: int) -> aioredis.Redis:
    tls = {"ssl": True, "ssl_ca_certs": target.options.get("ssl_ca_certs")} if target.tls else {}
    sentinel_kwargs = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **tls}
    if "sentinel_password" in target.options:
        sentinel_kwargs["password"] = target.options["sentinel_password"]
        sentinel_kwargs["username"] = target.options.get("sentinel_username") or None
    manager = Sentinel(target.nodes, sentinel_kwargs=sentinel_kwargs)
    client = manager.master_for(
        target.service,
        redis_class=_SentinelClient,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=max_connections,
        timeout=10,
        db=target.db,
        username=target.username,
        password=target.password,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **_common(),
        **tls,
    )
    client.connection_pool.connection_class = _packed(client.connection_pool.connection_class)
    return client


@contextlib.asynccontextmanager
async def connect_redis(settings: Settings, url: str | None = None) -> AsyncIterator[aioredis.Redis]:
    """A client for `url` (default: the settings'); closed on exit.

    It does not PING: a process whose Redis is down must still start and answer
    /readyz with 503 until Redis returns.
    """
    client = make_client(url or settings.redis_url or "", settings.redis_max_connections)
    try:
        yield client
    finally:
        await client.aclose()
