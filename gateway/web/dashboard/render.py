"""Rendering the dashboard's pages: one Jinja2 environment, its filters, the headers every page gets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from gateway.web.dashboard import auth, timeline

HERE = Path(__file__).parent
STATUS_LABELS = {
    "running": "Running",
    "waiting_human": "Waiting for a person",
    "waiting_approval": "Waiting for approval",
    "done": "Done",
    "failed": "Failed",
}
# Pages run only our own script and style; nothing may frame them.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _datetime(value: Any) -> datetime | None:
    """A datetime from a datetime, an ISO string or epoch seconds."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _ago(value: Any) -> str:
    """'3 min ago'."""
    when = _datetime(value)
    if when is None:
        return ""
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now" if seconds < 5 else f"{int(seconds)} s ago"


def _when(value: Any) -> str:
    when = _datetime(value)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


env.filters.update(ago=_ago, when=_when, pretty=timeline.pretty)
env.globals.update(STATUS_LABELS=STATUS_LABELS)


def render(template: str, **context: Any) -> str:
    return env.get_template(template).render(**context)


def page(
    request: Request, current: auth.Session | None, template: str, *, status: int = 200, **context: Any
) -> HTMLResponse:
    """A whole page, setting the session cookie a first visit was given."""
    html = render(template, **{"request": request, "session": current, **context})
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if current is not None and current.cookie:
        auth.set_session_cookie(response, request, current.cookie)
    return response
