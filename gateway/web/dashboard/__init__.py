"""The dashboard: threads, what happened in them, what waits for a person, and the queues' health.

Server-rendered (Jinja2) with one small script and one stylesheet, no build step
and nothing fetched from elsewhere at run time. Mount it with
`app.include_router(dashboard_router())`; it reads `app.state.runtime`.
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway.web.dashboard.live import close_streams

__all__ = ["close_streams", "dashboard_router"]


def dashboard_router() -> APIRouter:
    """The dashboard's routes: `/`, and everything under /dashboard/."""
    from gateway.web.dashboard.routes import build_router

    return build_router()
