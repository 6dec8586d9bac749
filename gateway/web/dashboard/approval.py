"""The page an approval link opens: one call, Approve or Deny, usable once, no login.

The link (gateway.links) is the credential: it names the thread, the call and
the person it was mailed to, and only that person's mailbox received it. The
form carries a CSRF token derived from the link's nonce, so a page elsewhere
cannot post a decision without first reading ours (which the CSP and
`frame-ancestors 'none'` keep it from doing). The decision is enqueued like the
API's, recorded as by the person the link names, with the nonce as its dedupe
key: a second use, a double click included, is answered 409 and enqueues nothing.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request
from fastapi.responses import Response
from pydantic import ValidationError

from gateway import links
from gateway.errors import InboundRejected
from gateway.events import ApprovalRequested, pending_request
from gateway.runtime import Runtime
from gateway.web.api import ApprovalIn, submit_resume
from gateway.web.dashboard import auth
from gateway.web.dashboard.render import page

INVALID = "This approval link is not valid or has expired. Ask for a new one by replying to the request again."


def _csrf(key: bytes, link: links.Link) -> str:
    return hmac.new(key, f"link-csrf:{link.nonce}".encode(), hashlib.sha256).hexdigest()[:40]


def _message(request: Request, status: int, title: str, message: str) -> Response:
    return page(request, None, "message.html", status=status, title=title, message=message)


async def _open(request: Request, token: str) -> tuple[Runtime, links.Link, bytes] | Response:
    rt: Runtime = request.app.state.runtime
    key = await rt.links.ensure() if rt.links is not None else None
    link = links.verify(key, token) if key is not None else None
    if key is None or link is None:
        return _message(request, 403, "Link not valid", INVALID)
    return rt, link, key


async def approval_page(token: str, request: Request) -> Response:
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    rt, link, key = opened
    thread = await rt.store.load(link.thread_id)
    waiting = pending_request(thread.events) if thread is not None else None
    request_event = waiting[1] if waiting is not None else None
    if thread is None or not isinstance(request_event, ApprovalRequested) or request_event.call_id != link.call_id:
        return _message(request, 410, "Nothing to decide", "This request was decided already or no longer waits.")
    return page(
        request,
        None,
        "approve.html",
        agent=thread.agent,
        tool=request_event.tool,
        arguments=request_event.arguments,
        identity=link.identity,
        action=request.url.path,
        csrf=_csrf(key, link),
    )


async def decide(token: str, request: Request) -> Response:
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    rt, link, key = opened
    try:
        fields = await auth.form(request)
    except HTTPException as exc:
        return _message(request, exc.status_code, "That did not work", str(exc.detail))
    if not hmac.compare_digest(fields.get("csrf", ""), _csrf(key, link)):
        return _message(request, 403, "That did not work", "Missing or wrong form token: open the link again.")
    decision = fields.get("decision")
    if decision not in ("approve", "deny"):
        return _message(request, 422, "That did not work", "Choose approve or deny.")
    try:
        body = ApprovalIn(
            type="approval_decision",
            call_id=link.call_id,
            approved=decision == "approve",
            comment=fields.get("comment", "").strip() or None,
        )
    except ValidationError:
        return _message(request, 422, "That did not work", "The comment is too long.")
    try:
        fresh = await submit_resume(rt, link.thread_id, body, link.identity, f"link-{link.nonce}")
    except InboundRejected as exc:  # NotFound, Conflict: decided already, or no longer waiting
        return _message(request, exc.status, "Nothing to decide", str(exc))
    if not fresh:
        return _message(request, 409, "Link used already", "This link was used already; the first decision stands.")
    done = "Approved" if body.approved else "Denied"
    return _message(request, 202, done, f"{done}; the thread resumes. You can close this page.")
