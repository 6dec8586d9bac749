"""Raw mail and attachments in Redis, by content hash, readable from every replica.

Kept in the channel's state under the `mail` namespace; a blob's ref is its full
key, so an attachment's `ref` names it on every replica. Values
expire after FRONTDESK_EMAIL_RETENTION: long enough for a thread waiting days on
a person, short enough that Redis is not an archive.
"""

from __future__ import annotations

import asyncio
import hashlib

from gateway.protocols import ChannelState

OFF_LOOP = 1024 * 1024


class BlobStore:
    """Content-addressed bytes with a time to live."""

    def __init__(self, state: ChannelState, ttl: int) -> None:
        self.state = state
        self.ttl = ttl

    async def put(self, kind: str, data: bytes) -> tuple[str, str]:
        """Store `data`; (its key, its sha256). Storing the same bytes again renews them."""
        # hashlib lets go of the GIL on large inputs: big mail is hashed off the event loop.
        digest = (await asyncio.to_thread(_sha256, data)) if len(data) > OFF_LOOP else _sha256(data)
        name = f"{kind}:{digest}"
        await self.state.set(name, data, ttl=self.ttl)
        return self.state.ref(name), digest

    async def get(self, ref: str) -> bytes | None:
        """The bytes `ref` names; None when they expired, or `ref` is not one of ours."""
        name = self.state.name_of(ref)
        return None if name is None else await self.state.get_bytes(name)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
