"""The `frontdesk` command.

    frontdesk dev                       everything in one process, embedded Redis if no URL is set
    frontdesk serve | worker | smtp     one role each, for deployments that scale them apart
    frontdesk listen [CHANNEL...]       channel listeners (SMTP, Slack Socket Mode) on their own
    frontdesk threads list | show       read threads (works beside a running `dev`)
    frontdesk launch AGENT TEXT         start a thread, print its id
    frontdesk dlq list | replay         dead letters
    frontdesk check                     validate settings and frontdesk.toml, then exit
    frontdesk eval [AGENT] | eval save  re-run agents' eval cases; save a thread's turns as cases

With FRONTDESK_REDIS_URL unset every command uses the embedded Redis under
FRONTDESK_DATA_DIR: the server `frontdesk dev` runs, when it runs, else one
started for the command and stopped after it. Errors a person can fix (a bad
setting, a bad frontdesk.toml) print one line naming the key and exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import json
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, assert_never

import redis
import structlog
import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from gateway import prefork
from gateway.config import FrontdeskConfig, parse_identity
from gateway.errors import ConfigError, InboundRejected, Malformed, Unavailable
from gateway.events import STATUSES, Event, Thread
from gateway.launch import launch_thread
from gateway.logs import configure_logging
from gateway.registry import load_object
from gateway.runtime import running
from gateway.serve import Roles, Started, run
from gateway.settings import Settings
from gateway.store.connection import connect_redis, redacted
from gateway.store.deadletters import DeadLetters, parse_ref
from gateway.store.embedded import URL_FILE, embedded_redis, running_url
from gateway.store.ingest import Ingest
from gateway.store.keys import Keys
from gateway.store.streams import Streams
from gateway.store.threads import ThreadStore

app = typer.Typer(
    name="frontdesk",
    help="A multi-channel gateway for small, focused LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
threads_app = typer.Typer(help="Read threads.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: entries that failed every attempt.", no_args_is_help=True)


class _RunByDefault(TyperGroup):
    """`frontdesk eval [AGENT]` is `frontdesk eval run [AGENT]`; `frontdesk eval save` is its own command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_RunByDefault, help="Eval cases cut from real threads, re-run against today's prompt and model."
)
app.add_typer(threads_app, name="threads")
app.add_typer(dlq_app, name="dlq")
app.add_typer(eval_app, name="eval")
dashboard_app = typer.Typer(help="The dashboard's login sessions.", no_args_is_help=True)
app.add_typer(dashboard_app, name="dashboard")

# click.Choice from the statuses, built from them so it cannot drift (which mypy cannot follow).
StatusName = enum.Enum("StatusName", {s: s for s in STATUSES}, type=str)  # type: ignore[misc]


class _Failed(Exception):
    """A one-shot command failed in a way the person should read (exit 1)."""


BY = "cli"  # who acted, on the note a replay leaves on its thread


def _errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc), 2)
        except _Failed as exc:
            _fail(str(exc), 1)
        except Unavailable as exc:
            _fail(f"Redis is unreachable: {exc.__cause__ or exc}", 1)
        except OSError as exc:  # a data directory we cannot write, a port taken: not an outage
            _fail(str(exc), 1)

    return wrapper


def _fail(message: str, code: int) -> None:
    typer.echo(f"frontdesk: error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The settings from the environment; a bad value is a ConfigError naming its variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[str | None]:
    """The Redis URL a command uses: the configured one (None), else the embedded server's."""
    if settings.redis_url:
        yield None
        return
    # embedded_redis reuses the server a running `frontdesk dev` started on the same
    # data directory, and otherwise starts one (reading its append-only file) for this command.
    with embedded_redis(settings.data_dir) as url:
        yield url


def _shutdown_redis(url: str) -> Callable[[], None]:
    """For a hard exit: stop the embedded server anyway (SHUTDOWN flushes its append-only file)."""

    def shutdown() -> None:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            client.shutdown()
        finally:
            client.close()

    return shutdown


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Outside the event loop SIGTERM unwinds like Ctrl+C does, so the embedded Redis is stopped."""

    def unwind(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(settings: Settings, roles: Roles, on_started: Callable[[Started], None] | None = None) -> None:
    configure_logging(settings)
    # A server that `frontdesk dev` runs for another terminal is not ours to stop, even on a hard exit.
    ours = not settings.redis_url and running_url(settings.data_dir) is None
    with _sigterm_unwinds(), redis_for(settings) as url:
        hard_exit = _shutdown_redis(url) if url and ours else None
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run(settings, roles, redis_url=url, on_started=on_started, on_hard_exit=hard_exit))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it on Linux): the worker's steps
    spend a large share of their CPU in the event loop and socket writes (benchmarks/)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# ---------------------------------------------------------------- processes


@app.command()
@_errors
def dev() -> None:
    """Everything in one process: HTTP, workers, senders and channel listeners."""
    settings = load_settings()
    if not settings.smtp_relay:
        # Locally, mail an agent sends is written to files rather than failing its thread.
        settings = settings.model_copy(update={"smtp_relay": f"file:{settings.data_dir / 'sent-mail'}"})
    _run(settings, Roles(http=True, worker=True, outbox=True, cron=True, listeners=None), on_started=_banner)


@app.command()
@_errors
def serve(
    workers: int | None = typer.Option(
        None, "--workers", min=1, max=256, help="HTTP processes on the one port [default: FRONTDESK_HTTP_WORKERS, 1]"
    ),
) -> None:
    """The HTTP app only: provider webhooks, the API, health and metrics."""
    settings = load_settings()
    if workers is not None:
        settings = settings.model_copy(update={"http_workers": workers})
    if settings.http_workers == 1:
        _run(settings, Roles(http=True))
        return
    configure_logging(settings)
    with _sigterm_unwinds(), redis_for(settings) as url, prefork.bind(settings.http_host, settings.http_port) as sock:

        def one(index: int) -> int:
            structlog.contextvars.bind_contextvars(http_process=index)  # which child said what
            try:
                _errors(_serve_one)(settings, url, sock)
            except typer.Exit as exc:  # _errors' one line was printed; its code is the child's
                return exc.exit_code
            return 0

        code = prefork.run_children(settings.http_workers, one)
    if code:
        raise typer.Exit(code)


def _serve_one(settings: Settings, url: str | None, sock: socket.socket) -> None:
    """One of `serve --workers N`'s processes: the HTTP role on the socket the parent bound."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run(settings, Roles(http=True), redis_url=url, http_socket=sock))


@app.command()
@_errors
def worker(
    no_worker: bool = typer.Option(False, "--no-worker", help="Do not apply inbound entries to threads."),
    no_outbox: bool = typer.Option(False, "--no-outbox", help="Do not deliver outbound messages."),
) -> None:
    """Apply inbound entries to threads (and fire cron schedules); deliver what they say."""
    if no_worker and no_outbox:
        raise ConfigError("--no-worker and --no-outbox together leave nothing to run")
    _run(load_settings(), Roles(worker=not no_worker, cron=not no_worker, outbox=not no_outbox))


@app.command()
@_errors
def smtp() -> None:
    """The email channel's SMTP listener."""
    _run(load_settings(), Roles(listeners=("email",)))


@app.command()
@_errors
def listen(
    channels: list[str] = typer.Argument(None, help="Channel names (default: every channel with a listener)."),
) -> None:
    """Channel listeners only (the SMTP server, Slack Socket Mode)."""
    _run(load_settings(), Roles(listeners=tuple(channels) if channels else None))


# The model clients live in the agent kit; the core finds its check by name, as it finds the
# built-in agents, and imports no agent code.
MODEL_CHECK = "agents.kit.models.check:check_model"


@app.command()
@_errors
def check(
    model: bool = typer.Option(
        False, "--model", help="Also send each model one tiny request and say what it accepted."
    ),
) -> None:
    """Validate the settings and frontdesk.toml, load the agents and channels, then exit."""
    settings = load_settings()
    configure_logging(settings, stream=sys.stderr)

    async def describe() -> bool:
        # No command is sent: a client for an address that is never dialled is enough to load plugins.
        async with running(settings, redis_url=settings.redis_url or "redis://127.0.0.1:6379/0") as rt:
            typer.echo(f"agents    {', '.join(rt.agent_names()) or '(none)'}")
            typer.echo(f"channels  {', '.join(sorted(rt.channels)) or '(none)'}")
            typer.echo(f"model     {_model_line(settings, rt.config)}")
            config = rt.config
        if not model:
            return True
        probe = load_object(MODEL_CHECK)
        specs = dict.fromkeys([settings.model, *(a.model for a in config.agents.values() if a.model)])
        healthy = True
        for spec in specs:
            result = await probe(settings, spec)
            for line in result.lines():
                typer.echo(line)
            healthy = healthy and result.error is None
        return healthy

    if not asyncio.run(describe()):
        raise typer.Exit(1)


def _model_line(settings: Settings, config: FrontdeskConfig) -> str:
    """Which model answers, saying plainly when it is the scripted demo."""
    if settings.model.strip().lower() == "demo":
        line = (
            "demo: replies come from the scripted demo model, not a language model "
            "(set FRONTDESK_MODEL=openai:<model> or anthropic:<model> for a real one)"
        )
    else:
        line = settings.model
    overrides = sorted((name, agent.model) for name, agent in config.agents.items() if agent.model)
    if overrides:
        line += "; " + ", ".join(f"{name} uses {model}" for name, model in overrides)
    return line


def _banner(started: Started) -> None:
    rt, settings = started.runtime, started.runtime.settings
    if settings.redis_url:
        where = redacted(settings.redis_url)
    else:
        where = f"embedded, data in {settings.data_dir.resolve()} ({URL_FILE} has its address)"
    listeners = f" (listening: {', '.join(started.listeners)})" if started.listeners else ""
    lines = [
        "frontdesk dev is running",
        f"  http      {started.http_url}  (dashboard /, API /api/v1, docs /docs)",
        f"  redis     {where}",
        f"  model     {_model_line(settings, rt.config)}",
        f"  agents    {', '.join(rt.agent_names()) or '(none)'}",
        f"  channels  {', '.join(sorted(rt.channels)) or '(none)'}{listeners}",
    ]
    if "email" in rt.channels:
        lines.append(
            f"  mail      SMTP on {settings.smtp_host}:{settings.smtp_port}; outgoing mail to {settings.smtp_relay}"
        )
    lines += [
        "  Ctrl+C stops it (twice: at once).",
    ]
    # stderr: stdout carries the log lines, which a collector may be reading as JSON.
    typer.echo("\n".join(lines), err=True)


# ---------------------------------------------------------------- one-shot commands


def _query(settings: Settings, work: Callable[[Any, Keys], Any]) -> Any:
    """Run `work(redis, keys)` against the command's Redis and return its result."""
    configure_logging(settings, stream=sys.stderr)  # stdout is the command's output

    async def go(url: str | None) -> Any:
        async with connect_redis(settings, url) as client:
            return await work(client, Keys(settings.key_prefix, settings.partitions))

    with redis_for(settings) as url:
        return asyncio.run(go(url))


@threads_app.command("list")
@_errors
def threads_list(
    status: StatusName | None = typer.Option(None, "--status", "-s", help="Only threads with this status."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=10_000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """One line per thread: id, status, agent, channel, last update (newest first)."""
    from gateway.web.api import thread_summary  # the HTTP API's modules, not loaded by the processes (serve.py)

    settings = load_settings()
    wanted = status.value if status else None
    rows = _query(settings, lambda r, k: ThreadStore(r, k).list(status=wanted, limit=limit))
    for meta in rows:
        row = thread_summary(meta)
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo(
                f"{row['id']}  {row['status']:<16} {row['agent']:<14} {row['channel']:<9} {_short_time(row['updated_at'])}"
            )


def _short_time(value: str | datetime | None) -> str:
    """UTC to the second: what a person scanning a list needs."""
    if not value:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@threads_app.command("show")
@_errors
def threads_show(
    thread_id: str = typer.Argument(..., help="The thread's id (th_...)."),
    as_json: bool = typer.Option(False, "--json", help="The thread as the API returns it."),
) -> None:
    """A thread's events, in order."""
    settings = load_settings()
    thread = _query(settings, lambda r, k: ThreadStore(r, k).load(thread_id))
    if thread is None:
        raise _Failed(f"no thread {thread_id!r}")
    if as_json:
        typer.echo(json.dumps(thread.public()))
        return
    typer.echo(render_thread(thread))


def render_thread(thread: Thread) -> str:
    """The thread as a person reads it: a header, then one line per event."""
    lines = [
        f"{thread.id}  {thread.status}  agent={thread.agent}  origin={thread.origin.identity}",
        f"created {_short_time(thread.created_at)}  updated {_short_time(thread.updated_at)}",
    ]
    for index, event in enumerate(thread.events):
        lines.append(f"{index:>4}  {event.at:%m-%d %H:%M:%S}  {event.type:<20} {_describe(event)}")
    return "\n".join(lines)


def _describe(event: Event) -> str:
    """One event on one line: who said what, which tool with which arguments, what came back."""
    text = " ".join(_event_text(event).split())  # one line per event, whatever the text holds
    return text if len(text) <= 200 else text[:199] + "…"


def _event_text(event: Event) -> str:
    match event.type:
        case "user_message" | "human_response":
            return f"{event.sender or '?'}: {event.text}"
        case "tool_call" | "approval_requested":
            return f"{event.tool}({json.dumps(event.arguments)}) [{event.call_id}]"
        case "tool_result":
            return f"[{event.call_id}] {json.dumps(event.result, default=str)}"
        case "request_human_input":
            return event.text + (f"  choices: {', '.join(event.choices)}" if event.choices else "")
        case "approval_decision":
            verdict = "approved" if event.approved else "denied"
            return f"{verdict} by {event.by} [{event.call_id}]" + (f": {event.comment}" if event.comment else "")
        case "done_for_now":
            return event.text
        case "delivery":
            return f"{event.status} {event.outbound_id} via {event.channel}" + (
                f": {event.detail}" if event.detail else ""
            )
        case "error":
            return f"{event.kind}: {event.message}"
        case "note":
            return f"{event.kind}: {event.text}" + (f" [{event.call_id}]" if event.call_id else "")
        case "context":
            return f"{event.name}: {json.dumps(event.result, default=str)}"
        case "timeout":
            return f"no answer to event {event.request_index} in time"
        case _:
            assert_never(event.type)


@app.command()
@_errors
def launch(
    agent: str = typer.Argument(..., help="The agent to run."),
    text: str = typer.Argument(..., help="What the agent is asked."),
    contact: str | None = typer.Option(None, "--contact", help="channel:address of the person the agent answers."),
) -> None:
    """Start a thread (as the API's POST /api/v1/threads does) and print its id."""
    settings = load_settings()
    try:
        person = parse_identity(contact) if contact else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--contact") from None
    configure_logging(settings, stream=sys.stderr)

    async def go(url: str | None) -> str:
        async with running(settings, redis_url=url) as rt:
            try:
                thread = await launch_thread(rt, agent, text, person, by="cli")
            except InboundRejected as exc:  # an unknown agent, a channel that is not configured
                raise ConfigError(str(exc)) from None
            assert thread is not None  # None only when a given thread_id exists already; none is given here
            return thread.id

    with redis_for(settings) as url:
        typer.echo(asyncio.run(go(url)))


# ---------------------------------------------------------------- dead letters


@dlq_app.command("list")
@_errors
def dlq_list(
    limit: int = typer.Option(10_000, "--limit", "-n", min=1, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (as GET /api/v1/dlq gives)."),
) -> None:
    """Dead-lettered entries, newest first: `<partition>:<entry id>`, where from, which thread, why."""
    settings = load_settings()
    for dead in _query(settings, lambda r, k: _dead_letters(settings, r, k).newest(limit)):
        if as_json:
            typer.echo(json.dumps(dead.public()))
        else:
            reason = " ".join(dead.reason.split())
            typer.echo(f"{dead.ref}  {dead.source:<8} {dead.thread_id or '-'}  {reason[:160]}")


def _dead_letters(settings: Settings, r: Any, k: Keys) -> DeadLetters:
    return DeadLetters(r, k, Streams(r, k), ThreadStore(r, k), Ingest(r, k, settings.dedupe_ttl))


@dlq_app.command("replay")
@_errors
def dlq_replay(
    entry: str | None = typer.Argument(None, help="`<partition>:<entry id>` as `dlq list` prints it."),
    replay_all: bool = typer.Option(False, "--all", help="Replay every dead letter, oldest first."),
) -> None:
    """Put dead-lettered entries back on the stream they came from, noting it on their threads."""
    if bool(entry) == replay_all:
        raise typer.BadParameter("give one ID or --all")
    settings = load_settings()
    if entry:
        try:
            parse_ref(entry, settings.partitions)
        except Malformed as exc:
            raise typer.BadParameter(str(exc), param_hint="ID") from None

        async def replay_one(r, k) -> bool:
            dlq = _dead_letters(settings, r, k)
            dead = await dlq.get(entry)
            return dead is not None and await dlq.replay(dead, BY)

        if not _query(settings, replay_one):
            raise _Failed(f"no dead letter {entry!r}")
        typer.echo(f"replayed {entry}")
        return
    typer.echo(f"replayed {_query(settings, lambda r, k: _dead_letters(settings, r, k).replay_all(BY))} entries")


# ---------------------------------------------------------------- evals

# In the agent kit, as the model check is: the core finds them by name and imports no agent code.
EVALS = "agents.kit.evals.command"


@eval_app.command("run")
@_errors
def eval_run(
    agent: str | None = typer.Argument(None, help="One agent (default: every agent with cases)."),
    model: list[str] = typer.Option([], "--model", help="A model to run the cases with (repeat: one column each)."),
    prompt: list[Path] = typer.Option(
        [], "--prompt", help="A prompt template to use instead of the agent's (repeat: one column each)."
    ),
    as_json: bool = typer.Option(False, "--json", help="The results as one JSON object."),
    min_pass_rate: float = typer.Option(
        1.0, "--min-pass-rate", min=0.0, max=1.0, help="Exit 1 when a column passes fewer than this share."
    ),
    cassette: Path | None = typer.Option(None, "--cassette", help="Answer from the model answers recorded here."),
    record: bool = typer.Option(False, "--record", help="Ask the model and record its answers in --cassette."),
    cases: Path | None = typer.Option(None, "--cases", help="Read the cases here, not in the agent's evals/."),
) -> None:
    """Re-run each case's turn and compare the model's step with the expected one."""
    settings = load_settings()
    configure_logging(settings, stream=sys.stderr)
    run = load_object(f"{EVALS}:run_evals")
    code = asyncio.run(
        run(
            settings,
            agent=agent,
            models=model,
            prompts=prompt,
            as_json=as_json,
            min_rate=min_pass_rate,
            cassette=cassette,
            record=record,
            cases_dir=cases,
            echo=typer.echo,
        )
    )
    raise typer.Exit(code)


@eval_app.command("save")
@_errors
def eval_save(
    source: str = typer.Argument(..., help="A thread id (th_...) or a file of threads (`threads show --json`)."),
    turn: int | None = typer.Option(None, "--turn", help="Only the model turn at this event index."),
    expect: str | None = typer.Option(
        None, "--expect", help='The right step, when the recorded one was wrong: {"tool": ..., "arguments": {...}}.'
    ),
    note: str | None = typer.Option(None, "--note", help="Why the case matters, or what the right step is."),
    cases: Path | None = typer.Option(None, "--cases", help="Write the cases here, not in the agent's evals/."),
) -> None:
    """Save a thread's model turns as eval cases in its agent's evals/saved.jsonl."""
    settings = load_settings()
    path = Path(source)
    if path.is_file():
        threads = _threads_in(path)
    else:
        thread = _query(settings, lambda r, k: ThreadStore(r, k).load(source))
        if thread is None:
            raise _Failed(f"no thread {source!r} (and no file of that name)")
        threads = [thread]
    configure_logging(settings, stream=sys.stderr)
    save = load_object(f"{EVALS}:save_threads")
    asyncio.run(save(settings, threads, turn=turn, expect=expect, note=note, cases_dir=cases, echo=typer.echo))


def _threads_in(path: Path) -> list[Thread]:
    """The threads of an export: one JSON object (as `threads show --json` prints), or one per line."""
    text = path.read_text()
    try:
        bodies = [json.loads(text)]
    except json.JSONDecodeError:
        bodies = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    bodies.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{number}: not JSON: {exc}") from None
    try:
        return [Thread.model_validate(body) for body in bodies]
    except ValidationError as exc:
        raise ConfigError(f"{path}: not a thread export: {exc.errors()[0]['msg']}") from None


@dashboard_app.command("sessions")
@_errors
def dashboard_sessions(
    end_all: bool = typer.Option(False, "--end-all", help="End every session: each viewer logs in again."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line (as the API gives)."),
) -> None:
    """The live dashboard sessions (a digest of each id, where it logged in from, when it expires)."""
    from gateway.web.dashboard.sessions import DashboardSessions  # as thread_summary above

    settings = load_settings()
    if end_all:
        typer.echo(f"ended {_query(settings, lambda r, k: DashboardSessions(r, k).end_all())} sessions")
        return
    for found in _query(settings, lambda r, k: DashboardSessions(r, k).active()):
        if as_json:
            typer.echo(json.dumps(found.public()))
        else:
            issued, expires = (_short_time(datetime.fromtimestamp(t, UTC)) for t in (found.issued, found.expires))
            typer.echo(f"{found.ref}  {issued}  until {expires}  {found.client:<15} {found.agent[:60]}")
