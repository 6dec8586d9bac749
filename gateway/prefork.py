"""Several HTTP processes on one port: `frontdesk serve --workers N` (FRONTDESK_HTTP_WORKERS).

One Python process runs the app on one core; ingest is CPU per request (benchmarks/NOTES.md),
so a gateway on a bigger machine needs a process per core. The parent binds the port once and
forks N children that accept on the same socket, each with its own event loop, runtime and
Redis pool (gateway.serve.run with that socket).

Why one socket forked rather than SO_REUSEPORT (a socket per process) or uvicorn's supervisor:
- one accept queue: a child that is gone leaves the connections waiting for the others, where a
  SO_REUSEPORT socket that closes resets the ones the kernel had already hashed to it; and the
  kernel's hash spreads few long-lived connections unevenly (wrk's 50, an ingress's keep-alives);
- port 0 works (tests), and a port that is taken fails once, in the parent, naming the setting;
- fork after the imports: the children share the loaded code's pages, and start in milliseconds;
- uvicorn's `workers` runs its own server from an import string with its own signal handling;
  gateway.serve runs the app as one role among others, drains it on SIGTERM (closing the
  dashboard's live streams first) and treats a failed role as a failed process. Each child runs
  exactly that, so one process and N behave alike.

Signals: SIGTERM/SIGINT to the parent reach every child, which drains as `serve` always has
(FRONTDESK_SHUTDOWN_GRACE); the parent exits 0 once all have. A second signal is passed on too:
the children exit at once. A child that dies on its own is logged (pid, exit status), the
others are drained, and the parent exits non-zero. It is not restarted: on Kubernetes the
kubelet is the supervisor — a container that exits is restarted with back-off and counted in
RESTARTS, where a restart inside the container would hide a crash loop behind a pod that looks
healthy with fewer processes than it was given cores (gateway.serve: a process half up is worse
than one that is down).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable

import structlog

from gateway.errors import ConfigError

log = structlog.get_logger("frontdesk.prefork")

_STOP = (signal.SIGTERM, signal.SIGINT)
_WATCHED = {*_STOP, signal.SIGCHLD}
_BACKLOG = 2048  # uvicorn's default


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every child accepts on; a port in use is a ConfigError naming the setting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"FRONTDESK_HTTP_HOST/FRONTDESK_HTTP_PORT: cannot listen on {host}:{port} ({exc})") from None
    sock.listen(_BACKLOG)
    return sock


def run_children(count: int, child: Callable[[int], int]) -> int:
    """Fork `count` children running `child(index)` (its exit code); supervise them; the exit code for the parent."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)  # taken by sigtimedwait below, never by a handler
    children: dict[int, int] = {}  # pid -> index
    try:
        for index in range(count):
            children[_fork(index, child, previous)] = index
        log.info("http processes started", pids=sorted(children))
        return _supervise(children)
    finally:
        for pid in children:  # only if the parent itself failed: leave no orphan serving the port
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _fork(index: int, child: Callable[[int], int], mask: set[int | signal.Signals]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        code = child(index)
    except SystemExit as exc:  # SIGTERM before its event loop took the signal (gateway.cli's unwinding)
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # nothing may unwind into the parent's code in a child
        log.exception("http process failed", index=index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never the parent's cleanup (its embedded Redis, its socket)


def _supervise(children: dict[int, int]) -> int:
    signals = 0
    failed = 0
    while children:
        sig = signal.sigtimedwait(_WATCHED, 1.0)  # the timeout: a SIGCHLD merged with another is still reaped
        if sig is not None and sig.si_signo in _STOP:
            signals += 1
            name = signal.Signals(sig.si_signo).name
            log.info("stopping http processes", signal=name, pids=sorted(children), at_once=signals > 1)
            _tell(children, sig.si_signo)
        for pid, status in _reaped(children):
            index = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if signals:
                log.info("http process stopped", pid=pid, index=index, exit_code=code)
                failed = failed or (code if code > 0 else 0)
                continue
            # Not asked to stop: it crashed or was killed (an OOM kill is SIGKILL). See the module doc.
            log.error("http process died; stopping the others", pid=pid, index=index, exit_code=code)
            failed = failed or (code if code > 0 else 128 - code if code < 0 else 1)
            signals = 1
            _tell(children, signal.SIGTERM)
    return failed


def _tell(children: dict[int, int], sig: int) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reaped(children: dict[int, int]) -> list[tuple[int, int]]:
    done = []
    for pid in list(children):
        found, status = os.waitpid(pid, os.WNOHANG)
        if found:
            done.append((found, status))
    return done
