"""The thread status while a step runs: "is running lookup_order…" under the person's message, then cleared.

`assistant.threads.setStatus` (an assistant thread, or with FRONTDESK_SLACK_STATUS=all any
thread: Slack takes it with chat:write in channels since its 2026-03-05 changelog; a rate
limit of its own, "special") shows a status line with rotating `loading_messages` (at most 10) and locks the person's
composer until it is cleared with an empty status, a reply is posted, or two minutes
pass. With FRONTDESK_SLACK_AGENT_SESSIONS, `agents.sessions.setStatus` (any thread of an
app declared as an agent; docs.slack.dev/ai/agent-sessions) says `processing`, then `active`.

The worker calls `progress` on every step start and end and must not wait, so each
Slack thread keeps only its latest wanted status and one task sends it: updates that
arrive while a call is out are coalesced into the next, and they are never reordered
(a clear can't be overtaken by the "working" it ends). A 429 is waited out (its
Retry-After, up to RETRY_CAP) and the latest status sent again; a clear is tried
hardest, since a status left standing is a locked composer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from channels.slack.api import SlackApi
from channels.slack.assistant import title_key
from gateway.errors import DeliveryFailed, Unavailable
from gateway.messages import Progress
from gateway.protocols import ChannelState
from gateway.retry import backoff

log = structlog.get_logger("frontdesk.slack")
NAMED_MAX = 10000  # remembered titled sessions, per process; past it a title is looked up again
ATTEMPTS = 4
RETRY_CAP = 10.0  # seconds; Slack's own two-minute timeout clears a status we could not


@dataclass(frozen=True)
class _Wanted:
    doing: str | None
    details: tuple[str, ...]


class StatusBoard:
    """The latest status wanted for each Slack thread, sent by one task per thread."""

    def __init__(self, api: SlackApi, state: ChannelState, *, sessions: bool, everywhere: bool, spawn) -> None:
        self.api = api
        self.state = state
        self._named: set[tuple[str, str]] = set()  # sessions this process has passed a title to
        self.sessions = sessions
        self.everywhere = everywhere or sessions  # agent sessions are thread-based anywhere
        self.spawn = spawn
        self._wanted: dict[tuple[str, str], _Wanted] = {}
        self._sending: set[tuple[str, str]] = set()

    def progress(self, update: Progress) -> None:
        reply = update.reply_to
        channel, ts = reply.get("channel"), reply.get("thread_ts")
        if not (channel and ts):
            return
        if not (self.everywhere or reply.get("assistant")):
            return  # FRONTDESK_SLACK_STATUS=assistant: assistant threads only
        key = (str(channel), str(ts))
        self._wanted[key] = _Wanted(update.doing, tuple(update.details))
        if key not in self._sending:
            self._sending.add(key)
            self.spawn(self._send(key))

    async def _send(self, key: tuple[str, str]) -> None:
        try:
            attempt = 0
            while key in self._wanted:
                wanted = self._wanted.pop(key)
                try:
                    await self._call(key, wanted)
                    attempt = 0
                except DeliveryFailed as exc:
                    attempt += 1
                    if not exc.retryable or attempt >= ATTEMPTS:
                        log.info("thread status not set", channel=key[0], thread_ts=key[1], error=str(exc))
                        continue
                    self._wanted.setdefault(key, wanted)  # a newer wish wins; else this one again
                    await asyncio.sleep(backoff(attempt, 0.5, RETRY_CAP, min(exc.retry_after or 0.0, RETRY_CAP)))
        finally:
            self._sending.discard(key)

    async def _call(self, key: tuple[str, str], wanted: _Wanted) -> None:
        channel, ts = key
        if self.sessions:
            status = "processing" if wanted.doing else "active"
            title = await self._title(key)
            await self.api.call(
                "agents.sessions.setStatus", channel_id=channel, thread_ts=ts, status=status, title=title
            )
            if title:
                self._named.add(key)
            return
        doing = wanted.doing
        await self.api.call(
            "assistant.threads.setStatus",
            channel_id=channel,
            thread_ts=ts,
            # Slack puts the app's name before it: "Helpdesk is running lookup_order…".
            status=f"is {doing[:1].lower()}{doing[1:]}…" if doing else "",
            loading_messages=list(wanted.details[:10]) if doing and wanted.details else None,
        )

    async def _title(self, key: tuple[str, str]) -> str | None:
        """The title an assistant thread was given, for the setStatus that may create its session."""
        if key in self._named:
            return None  # Slack uses the title only when it creates the session
        if len(self._named) > NAMED_MAX:
            self._named.clear()
        try:
            return await self.state.get(title_key(*key))
        except Unavailable:
            return None
