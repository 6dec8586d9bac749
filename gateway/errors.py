"""frontdesk's one error tree, translated at the edges.

    FrontdeskError
    ├── ConfigError        bad settings or frontdesk.toml: refuse to start, name the key
    ├── InboundRejected    the caller's fault; knows its HTTP status and SMTP reply
    │   ├── BadSignature, Replayed, TooLarge, Malformed, UnknownAgent
    │   ├── NotFound       the thread or dead letter a request names does not exist: 404
    │   ├── Conflict       a resume that does not match what the thread waits for
    │   └── RateLimited    a sender over FRONTDESK_RATE_LIMIT: 429 with Retry-After, SMTP 451 4.7.1
    ├── Unavailable        Redis (or another dependency) is unreachable: try again later
    ├── DeliveryFailed     a provider said no (or said nothing); carries status and retry_after
    │   └── RefusedDestination  a caller-supplied URL leads somewhere we must not call (gateway/egress.py)
    ├── ModelError         the model API failed after the client's own retries
    ├── StepError          the model's answer is no valid step; appended to the thread as an `error` event
    ├── ToolFailed         a tool's service said no, or nothing in time (an MCP server); a `tool_error` event
    └── LeaseLost          another worker holds the thread now; this one must not write it

Channels turn their SDK's exceptions into DeliveryFailed before they leave the
module, so the outbox catches only ours. The Redis client (gateway/store/connection.py)
raises Unavailable for an outage, so a loop catches that one class. Service
functions (gateway/web/api.py, api_ops.py) raise these, and the HTTP app maps each
to its status in one place (gateway/web/app.py); the dashboard catches the same.

What an inbound message the inbox did not take as new (`Accepted.outcome`) gets
back is decided here too, per transport, by `ANSWERS` and `answer()`.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from gateway.messages import Accepted, InboundMessage, Outcome


class FrontdeskError(Exception):
    """Base of every error frontdesk raises on purpose."""


class ConfigError(FrontdeskError):
    """A setting or a key of frontdesk.toml is wrong; the message names it."""


class InboundRejected(FrontdeskError):
    """An inbound request we refuse; the caller gets `status` (HTTP) or `smtp_reply`."""

    status = 400
    smtp_reply = "550 5.7.1 Rejected"

    def __init__(self, message: str, *, status: int | None = None, smtp_reply: str | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if smtp_reply is not None:
            self.smtp_reply = smtp_reply


class BadSignature(InboundRejected):
    status = 401
    smtp_reply = "550 5.7.1 Authentication failed"


class Replayed(InboundRejected):
    status = 401
    smtp_reply = "550 5.7.1 Message too old"


class TooLarge(InboundRejected):
    status = 413
    smtp_reply = "552 5.3.4 Message too big"


class Malformed(InboundRejected):
    status = 400
    smtp_reply = "550 5.6.0 Malformed message"


class UnknownAgent(InboundRejected):
    status = 404
    smtp_reply = "550 5.1.1 No such recipient"


class NotFound(InboundRejected):
    """What the request names (a thread, a dead letter, a delivery) does not exist."""

    status = 404
    smtp_reply = "550 5.1.1 No such thread"


class Conflict(InboundRejected):
    status = 409


class RateLimited(InboundRejected):
    """A sender over FRONTDESK_RATE_LIMIT; `retry_after` seconds until its window ends."""

    status = 429
    smtp_reply = "451 4.7.1 Too many messages from this sender, try again later"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(FrontdeskError):
    """A dependency (Redis) is unreachable; the caller should retry (503, SMTP 451)."""

    retry_after = 5
    smtp_reply = "451 4.3.0 Temporary failure, try again later"


class DeliveryFailed(FrontdeskError):
    """A channel could not deliver a message.

    `retryable` says whether the same send may be tried again (429, 5xx, connection
    refused before anything was sent); `ambiguous` that the provider may have
    accepted it although we got no answer (timeout, connection lost after sending).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        ambiguous: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class RefusedDestination(DeliveryFailed):
    """A caller-supplied URL resolves to an address we must not call (private, loopback, none); never retried."""


class ModelError(FrontdeskError):
    """The model API failed after the client's own retries (HTTP error, timeout, refusal)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class StepError(FrontdeskError):
    """The model's answer is not a valid step (no tool call, bad arguments): `kind` tags it for the thread."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ToolFailed(FrontdeskError):
    """A tool's service answered with an error, timed out, or was lost mid-call; the model sees the message."""


class LeaseLost(FrontdeskError):
    """Another worker owns the thread now; this one must not write it."""


# ---------------------------------------------------------------- what an Accepted gets back


class Answer(Enum):
    """What the caller of an inbound transport is told about a message."""

    TAKEN = "taken"  # the transport's ordinary answer, as for a new message
    DROPPED = "dropped"  # the ordinary answer too, although nothing was enqueued: the caller must not retry
    RETRY_LATER = "retry_later"  # raised as RateLimited: HTTP 429 + Retry-After, SMTP 451 4.7.1


# A transport is how the caller reaches us and what it does with an answer:
#   http    a caller honouring 429 + Retry-After (webhooks): {"thread_id"} 202, or 429
#   smtp    a sending MTA, which keeps a message on 4xx and retries: 250, or 451 4.7.1
#   slack   the Events API: retries any non-200 and disables an app that fails often: always 200
#   twilio  Twilio's messaging webhook: a 4xx is an error in the debugger, never a retry: empty TwiML
#   pull    a listener that fetches (a folder, a queue): the item is left in place and read again later
Transport = Literal["http", "smtp", "slack", "twilio", "pull"]

_RETRY: dict[Outcome, Answer] = {
    "new": Answer.TAKEN,
    "duplicate": Answer.TAKEN,  # a provider's retry is answered like the original (DESIGN)
    "ignored": Answer.DROPPED,
    "limited": Answer.RETRY_LATER,
}
_DROP: dict[Outcome, Answer] = {**_RETRY, "limited": Answer.DROPPED}
ANSWERS: dict[Transport, dict[Outcome, Answer]] = {
    "http": _RETRY,
    "smtp": _RETRY,
    "slack": _DROP,
    "twilio": _DROP,
    "pull": _RETRY,
}


def answer(transport: Transport, accepted: Accepted, message: InboundMessage) -> Answer:
    """What `accepted` gets back on `transport`; RETRY_LATER is raised as RateLimited for the edge to map."""
    verdict = ANSWERS[transport][accepted.outcome]
    if verdict is Answer.RETRY_LATER:
        raise RateLimited(f"too many messages from {message.sender}", retry_after=accepted.retry_after)
    return verdict
