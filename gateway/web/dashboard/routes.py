"""The dashboard's pages and actions, rendered on the server.

Pages: the thread list at `/`, a thread at /dashboard/threads/{id} (with its live
stream and the context the model saw at each turn), /dashboard/health, the login
form. Actions are POSTs of an urlencoded form carrying the CSRF token; each goes
through the same functions as the API (gateway.web.api_ops) and is recorded on the
thread as done by "dashboard". A form posted by the page's script gets JSON
back; one posted without script gets a redirect, so the pages work without it.
"""

from __future__ import annotations

import json
import secrets
import typing
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from pydantic import ValidationError

from gateway.errors import InboundRejected
from gateway.events import STATUSES, ChannelName, DeliveryEvent, Thread, pending_request
from gateway.protocols import SavesEvalCases, ShowsContext
from gateway.runtime import Runtime
from gateway.store.deadletters import DeadLetters
from gateway.web import api_ops
from gateway.web.api import ApprovalIn, HumanResponseIn, submit_resume
from gateway.web.dashboard import approval, auth, health, live, timeline
from gateway.web.dashboard.listing import Filters, Listing
from gateway.web.dashboard.render import HEADERS, HERE, page, render
from gateway.web.dashboard.sessions import ref_of

BY = "dashboard"  # who the dashboard's actions are recorded as: the holder of the API token
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
PAGE_SIZE = 50
FLASH = {
    "answered": "Answer sent; the thread resumes.",
    "approved": "Approval sent; the thread resumes.",
    "denied": "Denial sent; the thread resumes.",
    "duplicate": "That was sent already.",
    "retried": "The delivery is queued again.",
    "replayed": "The dead letter is back on its stream.",
    "saved": "Saved as an eval case in the agent's evals/saved.jsonl; `frontdesk eval` runs it.",
}


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime


async def _viewer(request: Request) -> auth.Session | Response:
    """The session of a page view, or the response that replaces the page (login, 403)."""
    try:
        return await auth.session(request)
    except auth.NotAllowed as exc:
        return page(request, None, "message.html", status=403, title="Dashboard closed", message=str(exc))
    except auth.LoginRequired:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/dashboard/login?{urlencode({'next': target})}", status_code=303)


async def _acting(request: Request) -> tuple[auth.Session, dict[str, str]] | Response:
    try:
        return await auth.actor(request)
    except auth.NotAllowed as exc:
        return _failed(request, 403, str(exc))
    except HTTPException as exc:
        return _failed(request, exc.status_code, str(exc.detail))


def _wants_json(request: Request) -> bool:
    return request.headers.get("x-requested-with") == "fetch"


def _failed(request: Request, status: int, message: str, back: str = "/") -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": False, "message": message}, status_code=status, headers=HEADERS)
    return page(request, None, "message.html", status=status, title="That did not work", message=message, back=back)


def _done(request: Request, code: str, back: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": True, "message": FLASH[code]}, status_code=202, headers=HEADERS)
    return RedirectResponse(f"{back}?flash={code}", status_code=303)


def _thread_url(thread_id: str) -> str:
    return f"/dashboard/threads/{quote(thread_id, safe='')}"


# ---------------------------------------------------------------- building the router


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    router.add_api_route("/", threads_page, methods=["GET"])
    router.add_api_route("/dashboard/login", login_page, methods=["GET"])
    router.add_api_route("/dashboard/login", login, methods=["POST"])
    router.add_api_route("/dashboard/logout", logout, methods=["POST"])
    router.add_api_route("/dashboard/health", health_page, methods=["GET"])
    router.add_api_route("/dashboard/sessions/end", end_sessions, methods=["POST"])
    router.add_api_route("/dashboard/threads/{thread_id}", thread_page, methods=["GET"])
    router.add_api_route("/dashboard/threads/{thread_id}/stream", thread_stream, methods=["GET"])
    router.add_api_route("/dashboard/threads/{thread_id}/context/{index}", context_page, methods=["GET"])
    router.add_api_route("/dashboard/threads/{thread_id}/answer", answer, methods=["POST"])
    router.add_api_route("/dashboard/threads/{thread_id}/decide", decide, methods=["POST"])
    router.add_api_route("/dashboard/threads/{thread_id}/deliveries/{outbound_id}/retry", retry, methods=["POST"])
    router.add_api_route("/dashboard/threads/{thread_id}/replay", replay_entry, methods=["POST"])
    router.add_api_route("/dashboard/threads/{thread_id}/save-test", save_test, methods=["POST"])
    router.add_api_route("/dashboard/dlq/{ref}/replay", replay_dead_letter, methods=["POST"])
    router.add_api_route("/dashboard/static/{name}", static, methods=["GET"])
    # Opened from an approval link (gateway.links): the token is the credential, no login.
    router.add_api_route("/dashboard/approve/{token}", approval.approval_page, methods=["GET"])
    router.add_api_route("/dashboard/approve/{token}", approval.decide, methods=["POST"])
    return router


async def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------- login


async def login_page(request: Request, next: str = "/") -> Response:
    try:
        if auth.check_open(_rt(request)):
            return RedirectResponse(_safe_next(next), status_code=303)
    except auth.NotAllowed as exc:
        return page(request, None, "message.html", status=403, title="Dashboard closed", message=str(exc))
    return _login_form(request, next)


def _login_form(request: Request, next_url: str, error: str | None = None, status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(18)
    response = page(request, None, "login.html", status=status, nonce=nonce, next=_safe_next(next_url), error=error)
    response.set_cookie(
        auth.LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path="/dashboard/login",
        httponly=True,
        samesite="strict",
        secure=auth.secure_cookie(request),
    )
    return response


async def login(request: Request) -> Response:
    rt = _rt(request)
    try:
        if auth.check_open(rt):
            return RedirectResponse("/", status_code=303)
    except auth.NotAllowed as exc:
        return page(request, None, "message.html", status=403, title="Dashboard closed", message=str(exc))
    try:
        fields = await auth.form(request)
    except HTTPException as exc:
        return _failed(request, exc.status_code, str(exc.detail))
    cookie_nonce = request.cookies.get(auth.LOGIN_COOKIE, "")
    if not cookie_nonce or not secrets.compare_digest(fields.get("nonce", ""), cookie_nonce):
        return _login_form(request, fields.get("next", "/"), "The form expired; please try again.", 403)
    if not auth.token_matches(rt, fields.get("token", "")):
        return _login_form(request, fields.get("next", "/"), "That is not the API token.", 403)
    cookie = await auth.log_in(request)
    response = RedirectResponse(_safe_next(fields.get("next", "/")), status_code=303)
    auth.set_session_cookie(response, request, cookie)
    response.delete_cookie(auth.LOGIN_COOKIE, path="/dashboard/login")
    return response


async def logout(request: Request) -> Response:
    """End this session (in Redis, so a copy of the cookie ends with it) and drop the cookie."""
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    current, _ = gate
    await auth.sessions(_rt(request)).end(current.sid)
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response


def _safe_next(target: str) -> str:
    """Only a path on this site: never send a fresh login to another origin."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# ---------------------------------------------------------------- the thread list


def _filters(request: Request) -> Filters:
    q = request.query_params
    status = q.get("status") or None
    return Filters(
        status=status if status in STATUSES else None,
        agent=q.get("agent") or None,
        channel=q.get("channel") or None,
        q=(q.get("q") or "").strip()[:200],
    )


def _link(f: Filters, **changes: Any) -> str:
    params = {"status": f.status, "agent": f.agent, "channel": f.channel, "q": f.q} | changes
    query = urlencode({k: v for k, v in params.items() if v})
    return f"/?{query}" if query else "/"


async def threads_page(request: Request) -> Response:
    current = await _viewer(request)
    if isinstance(current, Response):
        return current
    rt = _rt(request)
    f = _filters(request)
    cursor = request.query_params.get("cursor") or None
    listing = getattr(request.app.state, "dashboard_listing", None)
    if listing is None:
        listing = request.app.state.dashboard_listing = Listing(rt.redis, rt.keys, typing.get_args(ChannelName))
    listed = await listing.page(f, limit=PAGE_SIZE, cursor=cursor)
    context: dict[str, Any] = dict(rows=listed.rows, filters=f, cursor=cursor, page=listed, link=_link)
    if request.query_params.get("partial") == "rows":
        return HTMLResponse(render("_rows.html", **context), headers=HEADERS)
    counts = await listing.counts()
    refresh = None if cursor else _link(f, partial="rows")
    return page(
        request,
        current,
        "threads.html",
        **context,
        counts=counts,
        statuses=STATUSES,
        agents=sorted(rt.agents),
        channels=typing.get_args(ChannelName),
        refresh=refresh,
    )


# ---------------------------------------------------------------- one thread


def _can_render(rt: Runtime, thread: Thread) -> bool:
    return isinstance(rt.agents.get(thread.agent), ShowsContext)


def _panels(rt: Runtime, thread: Thread, current: auth.Session) -> dict[str, Any]:
    """What the thread page and its live updates render besides the timeline."""
    pending = pending_request(thread.events)
    turns = _model_turns(rt, thread)
    return dict(
        thread=thread,
        session=current,
        waiting=pending[1] if pending else None,
        # A new model turn redraws the panel too, so "save as test" offers it.
        actions_key=f"{thread.status}:{pending[0] if pending else ''}:{len(turns)}",
        save_turns=turns,
        nonce=secrets.token_urlsafe(12),
        show_context=_can_render(rt, thread),
        url=_thread_url(thread.id),
    )


async def thread_page(thread_id: str, request: Request) -> Response:
    current = await _viewer(request)
    if isinstance(current, Response):
        return current
    rt = _rt(request)
    thread = await rt.store.load(thread_id)
    if thread is None:
        return page(
            request,
            current,
            "message.html",
            status=404,
            title="No such thread",
            message=f"There is no thread {thread_id}.",
        )
    flash = FLASH.get(request.query_params.get("flash", ""))
    return page(
        request, current, "thread.html", items=timeline.items(thread), flash=flash, **_panels(rt, thread, current)
    )


def _update(rt: Runtime, current: auth.Session, thread: Thread, start: int) -> dict[str, Any]:
    """A live update: the new items, earlier items whose deliveries changed, header and actions."""
    items = timeline.items(thread)
    panels = _panels(rt, thread, current)
    changed: set[int] = set()
    for event in thread.events[start:]:
        if isinstance(event, DeliveryEvent):
            spoke = timeline.speaking_index(event.outbound_id)
            if spoke is not None:
                changed.add(spoke)
            changed.update(
                i.index
                for i in items[:start]
                if isinstance(i.event, DeliveryEvent) and i.event.outbound_id == event.outbound_id
            )
    return {
        "count": len(thread.events),
        "status": thread.status,
        "items": "".join(render("_item.html", item=i, **panels) for i in items[start:]),
        "replace": {str(i): render("_item.html", item=items[i], **panels) for i in sorted(changed) if i < start},
        "header": render("_header.html", **panels),
        "actions": render("_actions.html", **panels),
        "actions_key": panels["actions_key"],
    }


async def thread_stream(thread_id: str, request: Request, after: int = 0) -> Response:
    try:
        current = await auth.session(request)
    except (auth.NotAllowed, auth.LoginRequired):
        return PlainTextResponse("log in first", status_code=403)
    if current.cookie is not None:
        return PlainTextResponse("no session: reload the page", status_code=403)
    rt = _rt(request)
    last = request.headers.get("last-event-id", "")
    start = int(last) if last.isdigit() else max(0, after)
    stream = live.thread_events(request.app, rt, thread_id, start, lambda thread, i: _update(rt, current, thread, i))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def context_page(thread_id: str, index: int, request: Request, raw: bool = False) -> Response:
    current = await _viewer(request)
    if isinstance(current, Response):
        return current
    rt = _rt(request)
    thread = await rt.store.load(thread_id)
    agent = rt.agents.get(thread.agent) if thread is not None else None
    if thread is None or not 0 <= index < len(thread.events) or not isinstance(agent, ShowsContext):
        return page(
            request,
            current,
            "message.html",
            status=404,
            title="No context",
            message="There is no rendered context for that step.",
        )
    # Rendering is a pure function of the events, so the window is rebuilt from the prefix the model had.
    text = agent.render_context(thread.model_copy(update={"events": thread.events[:index]}))
    if raw:
        return PlainTextResponse(text, headers=HEADERS)
    return page(request, current, "context.html", thread=thread, index=index, text=text, url=_thread_url(thread_id))


def _model_turns(rt: Runtime, thread: Thread) -> list[tuple[int, str]]:
    """(index, what the model did) for each turn "save as test" can cut the thread at."""
    agent = rt.agents.get(thread.agent)
    if not isinstance(agent, SavesEvalCases):
        return []
    turns = []
    for index in agent.model_turns(thread):
        event = thread.events[index]
        what = getattr(event, "tool", None) or getattr(event, "kind", None)
        turns.append((index, f"{event.type} {what}" if what else event.type))
    return turns


# ---------------------------------------------------------------- acting on a thread


async def answer(thread_id: str, request: Request) -> Response:
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    _, fields = gate
    back = _thread_url(thread_id)
    try:
        body = HumanResponseIn(type="human_response", text=fields.get("text", "").strip())
    except ValidationError:
        return _failed(request, 422, "Write an answer first (at most 100,000 characters).", back)
    return await _resume(request, thread_id, body, fields, "answered")


async def decide(thread_id: str, request: Request) -> Response:
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    _, fields = gate
    back = _thread_url(thread_id)
    decision = fields.get("decision")
    if decision not in ("approve", "deny"):
        return _failed(request, 422, "Choose approve or deny.", back)
    try:
        body = ApprovalIn(
            type="approval_decision",
            call_id=fields.get("call_id", ""),
            approved=decision == "approve",
            comment=fields.get("comment", "").strip() or None,
        )
    except ValidationError:
        return _failed(request, 422, "The comment is too long.", back)
    return await _resume(request, thread_id, body, fields, "approved" if body.approved else "denied")


async def _resume(
    request: Request, thread_id: str, body: HumanResponseIn | ApprovalIn, fields: dict[str, str], code: str
) -> Response:
    back = _thread_url(thread_id)
    # The form's nonce makes a double click (or a resent form) one answer, as an Idempotency-Key does.
    nonce = fields.get("nonce", "")[:64]
    try:
        fresh = await submit_resume(_rt(request), thread_id, body, BY, f"dashboard-{nonce}" if nonce else None)
    except InboundRejected as exc:  # NotFound, Conflict
        return _failed(request, exc.status, str(exc), back)
    return _done(request, code if fresh else "duplicate", back)


async def retry(thread_id: str, outbound_id: str, request: Request) -> Response:
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    back = _thread_url(thread_id)
    try:
        await api_ops.retry_delivery(_rt(request), thread_id, outbound_id, BY)
    except InboundRejected as exc:  # NotFound
        return _failed(request, exc.status, str(exc), back)
    return _done(request, "retried", back)


async def replay_entry(thread_id: str, request: Request) -> Response:
    """Replay the dead letter a thread's `dead_letter` error names (by its original stream id)."""
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    _, fields = gate
    back, rt, source_id = _thread_url(thread_id), _rt(request), fields.get("source_id", "")
    dlq = DeadLetters.of(rt)
    dead = await dlq.find_for_thread(thread_id, lambda d: d.source_id == source_id and d.kind != "outbound")
    if dead is None or not await dlq.replay(dead, BY):
        return _failed(request, 404, "That entry is no longer in the dead-letter stream (replayed already?).", back)
    return _done(request, "replayed", back)


async def save_test(thread_id: str, request: Request) -> Response:
    """Save the thread cut at one model turn as an eval case beside its agent (a development aid)."""
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    _, fields = gate
    back, rt = _thread_url(thread_id), _rt(request)
    thread = await rt.store.load(thread_id)
    agent = rt.agents.get(thread.agent) if thread is not None else None
    if thread is None or not isinstance(agent, SavesEvalCases):
        return _failed(request, 404, "There is no thread here whose agent keeps eval cases.", back)
    turn = fields.get("turn", "")
    expect_text = fields.get("expect", "").strip()
    try:
        expect = json.loads(expect_text) if expect_text else None
    except json.JSONDecodeError as exc:
        return _failed(request, 422, f"The expected step is not JSON: {exc}.", back)
    if not turn.isdigit() or (expect is not None and not isinstance(expect, dict)):
        return _failed(request, 422, 'Choose a turn; an expected step is {"tool": ..., "arguments": {...}}.', back)
    try:
        agent.save_eval_case(thread, int(turn), expect=expect, note=fields.get("note", "").strip()[:2000] or None)
    except ValueError as exc:
        return _failed(request, 422, str(exc), back)
    except OSError as exc:  # an installed package is often read-only: this is for a checkout
        return _failed(request, 500, f"Could not write the case: {exc}.", back)
    return _done(request, "saved", back)


async def replay_dead_letter(ref: str, request: Request) -> Response:
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    dlq, back = DeadLetters.of(_rt(request)), "/dashboard/health"
    try:
        dead = await dlq.get(ref)
    except InboundRejected as exc:
        return _failed(request, exc.status, str(exc), back)
    if dead is None or not await dlq.replay(dead, BY):
        return _failed(request, 404, "No such dead letter (replayed already?).", back)
    return _done(request, "replayed", back)


# ---------------------------------------------------------------- health


async def health_page(request: Request) -> Response:
    current = await _viewer(request)
    if isinstance(current, Response):
        return current
    rt = _rt(request)
    context: dict[str, Any] = dict(
        health=await health.gather(rt),
        sessions=await auth.sessions(rt).active(),
        this_session=ref_of(current.sid),
        dead=await DeadLetters.of(rt).newest(100),
        stale=health.STALE_WORKER,
        flash=FLASH.get(request.query_params.get("flash", "")),
        thread_url=_thread_url,
    )
    if request.query_params.get("partial") == "body":
        return HTMLResponse(render("_health.html", session=current, **context), headers=HEADERS)
    return page(request, current, "health.html", **context)


async def end_sessions(request: Request) -> Response:
    """End every dashboard session, this one included: whoever holds the token logs in again."""
    gate = await _acting(request)
    if isinstance(gate, Response):
        return gate
    ended = await auth.sessions(_rt(request)).end_all()
    if _wants_json(request):
        return JSONResponse({"ended": ended})
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response
