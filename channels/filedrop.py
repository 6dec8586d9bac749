"""A file-drop channel: the smallest real channel, and the README's example.

A person (or a script) writes a text file into `<FRONTDESK_DATA_DIR>/drop/in/`;
its name up to the first dot is the conversation (`alice.1.txt` and `alice.2.txt`
are both in `alice`), the whole name is the message's id, and its text is the
message. The listener takes each file onto the inbox and removes it. Replies are
written to `drop/out/<conversation>/<outbound id>.txt`: the same name on a
retry, so writing twice changes nothing and a re-send is safe.

Off unless named: FRONTDESK_CHANNELS=channels.filedrop:channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from gateway.errors import RateLimited, answer
from gateway.messages import InboundMessage, OutboundMessage, Sent
from gateway.protocols import ChannelBase, ChannelContext

POLL = 0.2  # seconds between looks at the folder (a folder has no push)


class FileDropChannel(ChannelBase):
    name = "filedrop"
    resend_safe = True  # a re-send rewrites the same file

    def __init__(self, context: ChannelContext) -> None:
        self.inbox = context.inbox(self.name)
        self.incoming = context.settings.data_dir / "drop" / "in"
        self.outgoing = context.settings.data_dir / "drop" / "out"

    async def serve(self, stop: asyncio.Event) -> None:
        """Take each file dropped into `in/` until `stop` is set (a Listener)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            for path in sorted(self.incoming.glob("*.txt")):
                await self._take(path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)

    async def _take(self, path: Path) -> None:
        conversation = path.name.split(".", 1)[0]
        message = InboundMessage(
            id=path.name, channel=self.name, conversation=conversation, sender=conversation, text=path.read_text()
        )
        try:
            answer("pull", await self.inbox.accept(message), message)
        except RateLimited:
            return  # left in place: read again on a later pass
        path.unlink()  # enqueued (or a repeat of a file already taken)

    async def send(self, message: OutboundMessage) -> Sent:
        conversation = message.reply_to.get("conversation") or message.address
        folder = self.outgoing / conversation
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{message.id}.part"
        partial.write_text(message.text)
        os.replace(partial, folder / f"{message.id}.txt")  # whole or not at all, for whoever reads the folder
        return Sent(detail=message.id, conversation=conversation, reply_to={"conversation": conversation})


def channel(context: ChannelContext) -> FileDropChannel:
    return FileDropChannel(context)
