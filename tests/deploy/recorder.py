"""A channel for deployment tests: keeps what it sends, and opens a conversation per thread.

Opening a conversation (as a DM to a contact does) makes the reply arrive on a
conversation of another partition than the thread's, so a flow through it also
crosses partitions (the worker forwards the reply to the thread's own stream).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.errors import DeliveryFailed
from gateway.events import InboundMessage, OutboundMessage
from gateway.messages import Sent
from gateway.protocols import ChannelBase, ChannelContext


class _Post(BaseModel):
    id: str
    conversation: str
    sender: str
    text: str


class Recorder(ChannelBase):
    name = "rec"
    resend_safe = False

    def __init__(self, context: ChannelContext | None = None, *, refuse_first: bool = False) -> None:
        self.inbox = context.inbox(self.name) if context is not None else None
        self.sent: list[OutboundMessage] = []
        self.refused: set[str] = set()
        self.refuse_first = refuse_first  # a 503 to each message's first try: the outbox retries it later

    def router(self) -> APIRouter | None:
        """POST /rec/in: the smallest inbound route (no authentication: tests only)."""
        inbox = self.inbox
        if inbox is None:
            return None
        router = APIRouter()

        @router.post("/rec/in", status_code=202)
        async def inbound(post: _Post) -> dict:
            message = InboundMessage(channel=self.name, **post.model_dump())
            accepted = await inbox.accept(message)
            return {"thread_id": accepted.thread_id}

        return router

    async def send(self, message: OutboundMessage) -> Sent:
        if self.refuse_first and message.id not in self.refused:
            self.refused.add(message.id)
            raise DeliveryFailed("busy", status=503, retryable=True)
        self.sent.append(message)
        return Sent(
            detail=f"r{len(self.sent)}", conversation=f"dm-{message.thread_id}", reply_to={"dm": message.thread_id}
        )

    def texts(self, thread_id: str) -> list[str]:
        return [m.text for m in self.sent if m.thread_id == thread_id]
