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
        while not stop.is_set():
            # File calls run off the event loop: a slow disk must not hold the worker's threads.
            for path in await asyncio.to_thread(_dropped, self.incoming):
                await self._take(path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL)

    async def _take(self, path: Path) -> None:
        conversation = path.name.split(".", 1)[0]
        text = await asyncio.to_thread(path.read_text)
        message = InboundMessage(
            id=path.name, channel=self.name, conversation=conversation, sender=conversation, text=text
        )
        try:
            answer("pull", await self.inbox.accept(message), message)
        except RateLimited:
            return  # left in place: read again on a later pass
        await asyncio.to_thread(path.unlink)  # enqueued (or a repeat of a file already taken)

    async def send(self, message: OutboundMessage) -> Sent:
        conversation = message.reply_to.get("conversation") or message.address
        await asyncio.to_thread(_write, self.outgoing / conversation, f"{message.id}.txt", message.text)
        return Sent(detail=message.id, conversation=conversation, reply_to={"conversation": conversation})


def _dropped(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return sorted(folder.glob("*.txt"))


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.part"
    partial.write_text(text)
    os.replace(partial, folder / name)  # whole or not at all, for whoever reads the folder


def channel(context: ChannelContext) -> FileDropChannel:
    return FileDropChannel(context)
