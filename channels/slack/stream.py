"""Streamed answers: chat.startStream, chat.appendStream, chat.stopStream (one message that grows).

What streams, honestly: frontdesk's model clients return one whole tool call per turn
(agents/kit/models: no token streaming), so an answer is complete before it leaves. It
is streamed in pieces for the reading rhythm Slack's AI apps have, and the tools the
thread ran since the person last spoke (`OutboundMessage.steps`) open the stream as
finished `task_update` steps (a timeline). Only final answers and questions without
choices or buttons stream (FRONTDESK_SLACK_STREAM=true).

Exactly once. A stream is one message (one ts), so:

- `chat.startStream` is the post: an answer lost after sending is `ambiguous`, recorded
  and never started again, like chat.postMessage;
- its ts is recorded (channel state, `stream:<outbound id>`) before any append, so a
  send tried again after a failure, a 429 beyond RETRY_CAP or a crash never starts a
  second stream: it completes the first — chat.stopStream, then chat.update with the
  whole text, which puts the message in its final state whatever part of the appends
  landed (an append whose answer was lost may or may not have);
- appends are coalesced: at most FRONTDESK_SLACK_STREAM_APPENDS per answer (chat.appendStream
  is Tier 4, 100+ a minute per workspace), each at least FRONTDESK_SLACK_STREAM_CHUNK
  characters; a 429 is waited out for its Retry-After (gateway.retry), up to RETRY_CAP.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import structlog

from channels.slack.api import SlackApi
from channels.slack.mrkdwn import MARKDOWN_LIMIT, mentions, to_mrkdwn
from channels.slack.settings import SlackAgentSettings
from gateway.errors import DeliveryFailed, Unavailable
from gateway.markdown import to_markdown
from gateway.messages import OutboundMessage, Sent
from gateway.protocols import ChannelState
from gateway.retry import backoff

log = structlog.get_logger("frontdesk.slack")
RETRY_CAP = 10.0  # seconds one append may wait on a 429 before the send is left to the outbox's retry
ATTEMPTS = 3
FILL = 0.8  # a piece is at least this share of its room (see _pieces)


class Streamer:
    """Sends one outbound message as a Slack stream, or completes the stream a failed try left."""

    def __init__(self, api: SlackApi, state: ChannelState, settings: SlackAgentSettings, ttl: int) -> None:
        self.api = api
        self.state = state
        self.settings = settings
        self.ttl = ttl

    def wants(self, message: OutboundMessage, thread_ts: str | None) -> bool:
        return bool(
            self.settings.stream
            and thread_ts
            and message.kind in ("final", "question")
            and not message.choices
            and not message.actions
            and message.text.strip()
            # Longer than the pieces can carry (each at most MARKDOWN_LIMIT, a markdown block's and
            # markdown_text's limit): posted in parts instead.
            and len(message.text) <= FILL * MARKDOWN_LIMIT * (self.settings.stream_appends + 1)
        )

    async def send(self, message: OutboundMessage, channel: str, thread_ts: str) -> Sent:
        key = f"stream:{message.id}"
        record = await self.state.fields(key)
        # Markdown rebuilt from the one parse (gateway.markdown): only what it accepted is markup.
        text = mentions(to_markdown(message.text))
        if record.get("done"):
            return Sent(detail=record.get("ts"))
        if record.get("ts"):
            log.info("completing a stream an earlier try left open", outbound_id=message.id, ts=record["ts"])
            return await self._complete(key, channel, record["ts"], text)
        pieces = _pieces(text, self.settings.stream_chunk, self.settings.stream_appends)
        reply = message.reply_to or {}
        recipient = message.address.rsplit("/", 1)[-1]
        data = await self.api.call(
            "chat.startStream",
            posts=True,
            channel=channel,
            thread_ts=thread_ts,
            recipient_team_id=reply.get("team"),
            # Slack wants the recipient when streaming in a channel (not in a DM).
            recipient_user_id=recipient if recipient[:1] in ("U", "W") else None,
            task_display_mode="timeline" if message.steps else None,
            chunks=[*_steps(message.steps), {"type": "markdown_text", "text": pieces[0]}],
        )
        ts = str(data.get("ts") or "")
        if not ts:
            raise DeliveryFailed("chat.startStream: Slack gave no ts", ambiguous=True)
        await self._remember(key, "ts", ts)
        try:
            for piece in pieces[1:]:
                await self._append(channel, ts, piece)
            await self.api.call("chat.stopStream", channel=channel, ts=ts)
        except DeliveryFailed as exc:
            log.info("stream cut off; completing it", outbound_id=message.id, ts=ts, error=str(exc))
            return await self._complete(key, channel, ts, text)
        await self._remember(key, "done", "1")
        return Sent(detail=ts)

    async def _append(self, channel: str, ts: str, piece: str) -> None:
        for attempt in range(ATTEMPTS):
            try:
                await self.api.call("chat.appendStream", posts=True, channel=channel, ts=ts, markdown_text=piece)
                return
            except DeliveryFailed as exc:
                # A 429 (or 5xx) means Slack did not take it: the same piece again is no repeat.
                if not exc.retryable or exc.ambiguous or attempt == ATTEMPTS - 1:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else backoff(attempt, 0.5, RETRY_CAP)
                if wait > RETRY_CAP:
                    raise
                await asyncio.sleep(wait)

    async def _complete(self, key: str, channel: str, ts: str, text: str) -> Sent:
        """Stop the stream if it still runs, then set the message to the whole text: the same result however often."""
        try:
            await self.api.call("chat.stopStream", channel=channel, ts=ts)
        except DeliveryFailed as exc:
            if exc.retryable and not exc.ambiguous:
                raise
            # Already stopped (by us before a crash, or by Slack's own timeout): the update below still applies.
            log.info("stream already stopped", ts=ts, error=str(exc))
        mrkdwn = to_mrkdwn(text)
        blocks: list[dict[str, Any]] | None = (
            [{"type": "markdown", "text": text}] if len(text) <= MARKDOWN_LIMIT else None
        )
        try:
            await self.api.call("chat.update", channel=channel, ts=ts, text=mrkdwn[:MARKDOWN_LIMIT], blocks=blocks)
        except DeliveryFailed as exc:
            # chat.update is idempotent: a lost answer is safe to try again, so nothing here is ambiguous.
            raise DeliveryFailed(
                str(exc), status=exc.status, retryable=exc.retryable or exc.ambiguous, retry_after=exc.retry_after
            ) from exc
        await self._remember(key, "done", "1")
        return Sent(detail=ts)

    async def _remember(self, key: str, field: str, value: str) -> None:
        try:
            await self.state.set_field(key, field, value, ttl=self.ttl)
        except Unavailable as exc:
            if field == "ts":
                # Without the ts a retry would start a second stream: stop here, the outbox records the failure.
                raise DeliveryFailed(f"stream started but not recorded: {exc}", ambiguous=True) from exc
            log.warning("stream finished but not recorded", key=key, error=str(exc))


def _pieces(text: str, chunk: int, appends: int) -> list[str]:
    """`text` cut into at most `appends` + 1 pieces of about `chunk` characters or more, at whitespace.

    Each cut lands in the last fifth of a piece's room (whitespace there, else a hard cut), so
    a piece is at least 0.8 of `size`, which is chosen to make `appends` + 1 pieces enough.
    """
    size = max(chunk, math.ceil(len(text) / (appends + 1) / FILL), 1)
    pieces: list[str] = []
    rest = text
    while len(rest) > size:
        cut = rest.rfind(" ", math.ceil(size * FILL), size)
        cut = size if cut < 0 else cut + 1
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


def _steps(steps: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": "task_update", "id": f"step-{i}", "title": f"Ran {tool}", "status": "complete"}
        for i, tool in enumerate(steps[:20])
    ]
