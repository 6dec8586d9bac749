"""Raw mail and attachments in Redis, by content hash, readable from every replica.

The client decodes replies as UTF-8; mail is bytes, so reads ask redis-py not to
decode (its NEVER_DECODE option, the one its own DUMP and SYNC use). Values
expire after FRONTDESK_EMAIL_RETENTION: long enough for a thread waiting days on
a person, short enough that Redis is not an archive.
"""

from __future__ import annotations

import asyncio
import hashlib

import redis.asyncio as aioredis
from redis.client import NEVER_DECODE

from gateway.keys import Keys

OFF_LOOP = 1024 * 1024


class BlobStore:
    """Content-addressed bytes with a time to live."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl

    def ref(self, kind: str, digest: str) -> str:
        return self.keys.key("mail", kind, digest)

    async def put(self, kind: str, data: bytes) -> tuple[str, str]:
        """Store `data`; (its key, its sha256). Storing the same bytes again renews them."""
        # hashlib lets go of the GIL on large inputs: big mail is hashed off the event loop.
        digest = (await asyncio.to_thread(_sha256, data)) if len(data) > OFF_LOOP else _sha256(data)
        key = self.ref(kind, digest)
        await self.redis.set(key, data, ex=self.ttl)
        return key, digest

    async def get(self, key: str) -> bytes | None:
        return await self.redis.execute_command("GET", key, **{NEVER_DECODE: True})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
