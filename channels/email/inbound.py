"""Accepted mail onto the stream (before `250`), and the rest of its reading after.

On the SMTP path a message costs a header parse, one SET of its raw bytes, a
conversation lookup or two and the ingest script; the reply waits for all of
them, so a `250` always means the message is on the stream. The full MIME parse,
quote stripping and attachment storage run in the worker (`complete`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import structlog

from channels.email import tokens
from channels.email.auth import Authenticator
from channels.email.headers import Headers, read_headers
from channels.email.parse import parse
from channels.email.quotes import new_text
from channels.email.store import BlobStore
from gateway import metrics
from gateway.errors import Malformed, answer
from gateway.messages import Attachment, InboundMessage
from gateway.protocols import Inbox
from gateway.settings import Settings

log = structlog.get_logger("frontdesk.email")
MAX_LOOKUPS = 12  # ancestors looked up per message: the parent and the newest few suffice
MAX_TEXT = 64_000  # characters of new text handed to the agent
MAX_FULL_TEXT = 256_000  # characters of the whole body kept on the event; the raw mail has the rest
THREAD_PARSE = 512 * 1024  # larger messages are parsed off the event loop


class Inbound:
    """Turns a received message into InboundMessages, and completes them in the worker."""

    def __init__(
        self, inbox: Inbox, settings: Settings, blobs: BlobStore, token_key: Callable[[], Awaitable[bytes]]
    ) -> None:
        self.inbox = inbox
        self.settings = settings
        self.blobs = blobs
        self.token_key = token_key
        self.auth = Authenticator(settings)

    def agent_for(self, address: str) -> str | None:
        """The agent answering `address` (plus-addressing included), None for a stranger."""
        base, _ = tokens.split(address)
        return self.inbox.route(base)

    # ------------------------------------------------------------ SMTP path
    async def receive(self, mail_from: str, rcpt_tos: list[str], raw: bytes, peer: str = "") -> str:
        """Enqueue `raw` for each agent it is addressed to; the SMTP reply to give. `peer`: the client's IP."""
        try:
            facts = read_headers(raw, mail_from)
        except Exception as exc:
            raise Malformed(f"unreadable header block: {exc}") from exc
        reason = facts.robot or ("own_address" if self.agent_for(facts.sender) else None)
        if reason:
            # RFC 3834 §2: never answer these. Accepting (not refusing) avoids bouncing a bounce.
            metrics.LOOPS_AVOIDED.labels("email", reason).inc()
            log.info("mail not answered", reason=reason, message_id=facts.message_id, sender=facts.sender)
            return "250 2.0.0 Accepted; automatic mail is not answered"
        # Before anything stores or reads it: a sender's copy of our relay's verdict must not survive.
        raw = self.auth.strip(raw, peer)
        raw_key, _ = await self.blobs.put("raw", raw)
        for i, (agent, address, token) in enumerate(self._targets(rcpt_tos)):
            conversation = await self._conversation(facts, token)
            # One message to two of our agents starts a thread with each: the second
            # keys carry the agent, as the dedupe and conversation keys are per channel.
            suffix = f"#{agent}" if i else ""
            message = InboundMessage(
                id=facts.message_id + suffix,
                channel="email",
                conversation=conversation + suffix,
                sender=facts.sender,
                address=address,
                reply_to=reply_to(facts, address),
                data={"raw": raw_key, "size": len(raw), "subject": facts.subject, "mail_from": mail_from},
            )
            accepted = await self.inbox.accept(message, agent=agent)
            # Over the rate: 451, and the sending MTA keeps the message and tries again after its own backoff.
            answer("smtp", accepted, message)
            log.info(
                "mail accepted",
                message_id=facts.message_id,
                agent=agent,
                thread_id=accepted.thread_id,
                duplicate=accepted.duplicate,
            )
        return "250 2.0.0 Message accepted"

    def _targets(self, rcpt_tos: list[str]) -> list[tuple[str, str, str]]:
        """(agent, our address, reply token) per distinct agent, a tokened address preferred."""
        found: dict[str, tuple[str, str, str]] = {}
        for rcpt in rcpt_tos:
            agent = self.agent_for(rcpt)
            if agent is None:
                continue
            base, token = tokens.split(rcpt)
            if agent not in found or (token and not found[agent][2]):
                found[agent] = (agent, base, token)
        return list(found.values())

    async def _conversation(self, facts: Headers, token: str) -> str:
        """The conversation key: an ancestor we know, else the token's thread, else the root."""
        for mid in facts.ancestors()[:MAX_LOOKUPS]:
            if await self.inbox.thread_for(mid):
                return mid
        if token:
            thread_id = tokens.verify(await self.token_key(), token)
            if thread_id and await self.inbox.thread_status(thread_id) is not None:
                conversation = f"thread/{thread_id}"
                await self.inbox.bind(conversation, thread_id)
                return conversation
            if thread_id is None and tokens.looks_like(token):
                # Forged or mangled: ignored, so the mail is new mail to the agent, never a resume.
                metrics.REJECTED.labels("email", "bad_reply_token").inc()
                log.warning(
                    "reply token does not verify; treated as new mail", message_id=facts.message_id, sender=facts.sender
                )
        return facts.root

    # ------------------------------------------------------------ worker
    async def complete(self, message: InboundMessage) -> InboundMessage | None:
        """Read the body: new text, full text, attachments by reference; None for a bounce."""
        data = dict(message.data or {})
        if "raw" not in data or "full" in data:
            return message
        raw = await self.blobs.get(data["raw"])
        if raw is None:
            raise Malformed(f"the raw mail {data['raw']} is gone (expired or evicted)")
        mail = await asyncio.to_thread(parse, raw) if len(raw) > THREAD_PARSE else parse(raw)
        if mail.report:
            metrics.LOOPS_AVOIDED.labels("email", "report").inc()
            log.info("mail not answered", reason="report", message_id=message.id, sender=message.sender)
            return None
        attachments = [await self._attachment(part) for part in mail.attachments]
        text = new_text(mail.text) or data.get("subject", "")
        verdict = await self.auth.verify(raw, message.sender)
        data.update(full=True, html=mail.html, auth=verdict.as_data())
        if not verdict.passed:
            log.info("mail sender not authenticated", message_id=message.id, sender=message.sender, why=verdict.detail)
        if mail.problems:
            data["problems"] = mail.problems[:5]
            log.info("mail read with problems", message_id=message.id, problems=mail.problems[:5])
        return message.model_copy(
            update={
                "text": _cap(text, MAX_TEXT),
                "full_text": _cap(mail.text, MAX_FULL_TEXT),
                "attachments": attachments,
                "data": data,
                "unverified": None if verdict.passed else verdict.detail,
            }
        )

    async def _attachment(self, part) -> Attachment:
        size = len(part.data)
        if size > self.settings.email_attachment_max_bytes:
            # Listed so the agent knows it exists, but not stored: `ref` stays empty.
            return Attachment(
                filename=part.filename,
                content_type=part.content_type,
                size=size,
                sha256=hashlib.sha256(part.data).hexdigest(),
                ref="",
            )
        ref, digest = await self.blobs.put("att", part.data)
        return Attachment(filename=part.filename, content_type=part.content_type, size=size, sha256=digest, ref=ref)


def reply_to(facts: Headers, ours: str) -> dict:
    """What answering this message in place needs: its id, its chain, its subject, both ends."""
    return {
        "message_id": facts.message_id,
        "references": facts.references or facts.in_reply_to,
        "subject": facts.subject,
        "to": facts.reply_address,
        "from": ours,
    }


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[… truncated]"
