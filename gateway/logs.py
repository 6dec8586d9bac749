"""Logging: structlog for our code, with the stdlib's loggers (uvicorn, asyncio) routed through it.

A deployed process writes one JSON object per line to stdout, which log collectors
read as they are; a person at a terminal (stdout is a TTY, or
FRONTDESK_LOG_FORMAT=console) gets aligned, readable lines instead. Context that
belongs to a whole task — the process role, the thread a worker is applying — is
bound with `structlog.contextvars`, so every line logged under it carries it
without a logger being passed around.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

from gateway.errors import ConfigError
from gateway.settings import Settings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Libraries that log every request at INFO: the outbox's provider calls would drown the rest.
_CHATTY = ("httpx", "httpcore", "hpack", "aiosmtplib")


def log_level(name: str) -> int:
    try:
        return _LEVELS[name.strip().lower()]
    except KeyError:
        raise ConfigError(f"FRONTDESK_LOG_LEVEL: {name!r} is not one of {', '.join(_LEVELS)}") from None


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Send every log line (ours and the libraries') to `stream` (stdout) in the configured format."""
    level = log_level(settings.log_level)
    stream = stream or sys.stdout
    console = settings.log_format == "console" or (settings.log_format == "auto" and _isatty(stream))
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        timestamper,
    ]
    render: list[Processor]
    if console:
        render = [
            structlog.dev.ConsoleRenderer(colors=_isatty(stream), exception_formatter=_tracebacks(_isatty(stream)))
        ]
    else:
        # A plain traceback string: locals (dict_tracebacks' default) could carry tokens into the logs.
        render = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_frontdesk", False)]:
        root.removeHandler(old)
    handler._frontdesk = True  # type: ignore[attr-defined]  # a marker, so a second call replaces, not doubles
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # uvicorn configures its own handlers unless told not to; ours are the only ones.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def _tracebacks(colors: bool):
    """Readable tracebacks without local variables: a frame's locals can hold a token or a password.

    structlog's default (rich, or better-exceptions) prints every frame's locals.
    """
    if getattr(structlog.dev, "rich", None) is None:  # rich is not installed
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False, color_system="truecolor" if colors else None)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
