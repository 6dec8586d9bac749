"""Running frontdesk's roles in a process: HTTP, workers, senders, cron, channel listeners.

Every role is a coroutine that runs until a shared `stop` event is set, all on one
runtime. `frontdesk dev` runs them all; `serve`, `worker` and `smtp` run one or a
few. A process without the HTTP app also serves /healthz, /readyz and /metrics on
FRONTDESK_OPS_PORT when that is set (gateway.web.ops), so it can be probed and scraped.

SIGTERM or SIGINT sets `stop`: HTTP stops accepting and finishes its requests,
the worker stops reading and gives in-flight steps FRONTDESK_SHUTDOWN_GRACE
seconds, listeners close. A second signal exits at once; whatever was not saved
stays pending in Redis and another worker claims it after FRONTDESK_CLAIM_TIMEOUT.
A role that fails (a listener that cannot bind) stops the others: a process that
is half up would look healthy while dropping work. A role that simply returns
(Slack's listener without a Socket Mode token has nothing to do) leaves them be.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import structlog

from gateway.cron import Cron
from gateway.errors import ConfigError
from gateway.outbox import Outbox
from gateway.protocols import Listener
from gateway.runtime import Runtime, consumer_name, running, tune_gc
from gateway.settings import Settings
from gateway.worker import Worker

if TYPE_CHECKING:
    import uvicorn

    from gateway.web import probes

# The HTTP app (uvicorn, the API, the dashboard, its templates) and the ops server are imported
# by the roles that serve them, not at start-up: a `frontdesk worker` never calls them, and
# importing them cost it about 9 MiB of RSS (benchmarks/NOTES.md, "Worker memory").

log = structlog.get_logger("frontdesk.serve")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Roles:
    """What one process runs. `listeners`: channel names, or None for every channel that has one."""

    http: bool = False
    worker: bool = False
    outbox: bool = False
    cron: bool = False  # safe in every replica: each tick starts one thread (gateway.cron)
    listeners: tuple[str, ...] | None = ()


@dataclass
class Started:
    """What a process is up and doing, for its start-up message."""

    runtime: Runtime
    roles: Roles
    http_url: str | None = None
    listeners: list[str] = field(default_factory=list)


async def run(
    settings: Settings,
    roles: Roles,
    *,
    redis_url: str | None = None,
    on_started: Callable[[Started], None] | None = None,
    on_hard_exit: Callable[[], None] | None = None,
    http_socket: socket.socket | None = None,
) -> None:
    """Run `roles` until SIGTERM/SIGINT; `on_hard_exit` runs before a second signal's exit.

    `http_socket`: a listening socket to serve HTTP on (gateway.prefork's, shared by several
    processes) rather than binding FRONTDESK_HTTP_HOST/PORT."""
    stop = asyncio.Event()
    with stop_on_signals(stop, on_hard_exit):
        async with running(settings, redis_url=redis_url) as rt:
            consumer = consumer_name()
            listening = _listeners(rt, roles.listeners)
            jobs: dict[str, Awaitable[None]] = {}
            server = _http_server(rt) if roles.http else None
            if server is not None:
                jobs["http"] = serve_http(server, stop, http_socket)
            if roles.worker:
                jobs["worker"] = Worker(rt, consumer).run(stop)
            if roles.outbox:
                jobs["outbox"] = Outbox(rt, consumer).run(stop)
            if roles.cron:
                jobs["cron"] = Cron(rt).run(stop)
            for channel in listening:
                jobs[f"listener:{channel.name}"] = channel.serve(stop)
            if not jobs:
                raise ConfigError("nothing to run: no role is switched on and no channel has a listener")
            if server is None and settings.ops_port is not None:
                from gateway.web.ops import serve_ops

                jobs["ops"] = serve_ops(rt, stop)
            # Clients wait on HTTP and on the listeners (SMTP): their pauses must stay short.
            tune_gc(latency=server is not None or bool(listening))  # all above lives as long as the process
            log.info("starting", roles=sorted(jobs), consumer=consumer, model=settings.model)
            started = Started(rt, roles, listeners=[c.name for c in listening])
            jobs["started"] = _announce(started, server, stop, on_started)
            await supervise(stop, jobs)
            log.info("stopped")


async def supervise(stop: asyncio.Event, jobs: dict[str, Awaitable[None]]) -> None:
    """Run `jobs` together; when one fails the others are told to stop, and the failure re-raised."""

    async def guard(name: str, job: Awaitable[None]) -> None:
        structlog.contextvars.bind_contextvars(role=name)  # this task's own context
        try:
            await job
        except ConfigError:
            stop.set()  # the CLI prints it, naming the setting: no traceback
            raise
        except Exception:
            log.exception("role failed; stopping the process")
            stop.set()
            raise
        if not stop.is_set() and name != "started":
            log.info("role has nothing (more) to do")

    results = await asyncio.gather(*(guard(n, j) for n, j in jobs.items()), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, on_hard_exit: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGTERM/SIGINT set `stop`; a second one exits the process at once."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def handle(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) == 1:
            log.info("stopping; signal again to exit at once", signal=sig.name)
            stop.set()
            return
        log.warning("exiting at once", signal=sig.name)
        if on_hard_exit is not None:
            with contextlib.suppress(Exception):
                on_hard_exit()
        os._exit(128 + sig)  # no cleanup by design: the person asked twice

    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        # remove_signal_handler leaves the default action (exit, no cleanup) until the
        # previous handler is back: hold the signals meanwhile, so one arriving now is
        # delivered to the handler restored (which still stops the embedded Redis).
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous[sig])
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


# ---------------------------------------------------------------- HTTP


def _http_server(rt: Runtime) -> probes.Server:
    import uvicorn

    from gateway.web import probes
    from gateway.web.app import create_app

    settings = rt.settings
    config = uvicorn.Config(
        create_app(settings, rt),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,  # our handlers (gateway.logs) format uvicorn's lines too
        access_log=settings.access_log,
        # uvicorn annotates an int, and waits with asyncio.wait_for, which takes the float as it is.
        timeout_graceful_shutdown=settings.shutdown_grace,  # type: ignore[arg-type]
        server_header=False,
        # No route is a WebSocket, so no WebSocket stack is loaded. uvicorn's "auto" would: on
        # 0.29 (our floor) it imports websockets.legacy, deprecated by websockets 14 and later.
        ws="none",
    )
    return probes.Server(config)


async def serve_http(server: uvicorn.Server, stop: asyncio.Event, sock: socket.socket | None = None) -> None:
    """Serve until `stop` is set, then finish the requests in flight; on `sock` when given."""
    from fastapi import FastAPI

    from gateway.web import probes
    from gateway.web.dashboard import close_streams

    # An open dashboard page (a live stream) would hold the shutdown otherwise.
    await probes.serve_until(
        server,
        stop,
        setting="FRONTDESK_HTTP_HOST/FRONTDESK_HTTP_PORT",
        on_stop=lambda: close_streams(cast(FastAPI, server.config.app)),  # the app _http_server gave it
        sock=sock,
    )


def http_url(server: uvicorn.Server) -> str | None:
    if not server.started or not server.servers:
        return None
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return f"http://{host}:{port}"


async def _announce(started: Started, server: uvicorn.Server | None, stop: asyncio.Event, on_started) -> None:
    if server is not None:
        while not server.started and not stop.is_set():  # noqa: ASYNC110 - uvicorn sets a bool, not an event
            await asyncio.sleep(0.05)
        if stop.is_set():
            return
        started.http_url = http_url(server)
        log.info("http listening", url=started.http_url)
    if on_started is not None:
        on_started(started)


# ---------------------------------------------------------------- listeners


def _listeners(rt: Runtime, names: tuple[str, ...] | None) -> list[Listener]:
    """The channels whose `serve(stop)` this process runs; a named one that is missing is a ConfigError."""
    if names is None:
        return [c for c in rt.channels.values() if isinstance(c, Listener)]
    found: list[Listener] = []
    for name in names:
        channel = rt.channels.get(name)
        if channel is None:
            configured = ", ".join(sorted(rt.channels)) or "none"
            raise ConfigError(
                f"the {name!r} channel is not configured (its settings are unset); configured channels: {configured}"
            )
        if not isinstance(channel, Listener):
            raise ConfigError(f"the {name!r} channel has no listener to run")
        found.append(channel)
    return found
