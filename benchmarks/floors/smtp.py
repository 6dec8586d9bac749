"""The naive SMTP floor: a bare aiosmtpd handler that parses the whole message and XADDs it.

The obvious first version: `handle_DATA` reads every MIME part with
`policy.default`, then appends the raw bytes and a few header fields to a stream
with one XADD, and answers 250. No recipient check beyond accepting, no dedupe.
Served like frontdesk's (`loop.create_server`, on the event loop `frontdesk smtp` runs on).

    python -m benchmarks.floors.smtp --port 2526 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from email import policy
from email.parser import BytesParser

import redis.asyncio as aioredis
from aiosmtpd.smtp import SMTP

PARSER = BytesParser(policy=policy.default)


class Handler:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content or b""
        msg = PARSER.parsebytes(raw)
        body = msg.get_body(preferencelist=("plain", "html"))
        text = body.get_content() if body is not None else ""
        await self.redis.xadd(
            "floor:mail",
            {
                "from": envelope.mail_from or "",
                "to": ",".join(envelope.rcpt_tos),
                "id": str(msg["message-id"] or ""),
                "subject": str(msg["subject"] or ""),
                "text": text,
                "raw": raw,
            },
        )
        return "250 2.0.0 OK"


async def main(port: int, url: str) -> None:
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    redis = aioredis.Redis.from_url(url)
    loop = asyncio.get_running_loop()
    handler = Handler(redis)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="floor.localhost", enable_SMTPUTF8=True, data_size_limit=10 * 1024 * 1024),
        "127.0.0.1",
        port,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()
    await redis.aclose()


def _loop_factory():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    # The event loop `frontdesk` itself runs on (gateway.cli: uvloop when installed).
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main(args.port, args.redis))
