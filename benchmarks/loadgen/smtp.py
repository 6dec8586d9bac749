"""SMTP load: N clients, each on one connection, sending 3 KB messages back to back for a while.

A minimal client on raw asyncio streams (uvloop), so that the generator costs
little next to the server: EHLO once, then MAIL FROM / RCPT TO / DATA per
message, each reply awaited (RFC 5321 without PIPELINING, as aiosmtpd offers).
Every message has its own Message-ID and sender. Prints one JSON line.

    python -m benchmarks.loadgen.smtp --port 2525 --clients 20 --duration 10 --tag a
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

RCPT = "calculator@frontdesk.localhost"
_TEXT = (
    "Hello,\r\n\r\nCould you work out the total for the invoice below? The amounts are in euros.\r\n"
    + "".join(
        f"Line {i}: item {i * 7 % 13}, quantity {i % 5 + 1}, unit price {i * 3 % 17 + 2}.50\r\n" for i in range(24)
    )
    + "\r\nThanks,\r\nSam\r\n"
)
_HTML = "<html><body><p>" + _TEXT.replace("\r\n", "<br>\r\n") + "</p></body></html>\r\n"
TEMPLATE = (
    "From: Sam Person <{sender}>\r\n"
    f"To: Calculator <{RCPT}>\r\n"
    "Subject: Invoice total, please\r\n"
    "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
    "Message-ID: <{mid}@bench.example>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n\r\n"
    f"{_TEXT}\r\n"
    "--b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 7bit\r\n\r\n"
    f"{_HTML}\r\n"
    "--b1--\r\n"
)


def message(tag: str, n: int) -> tuple[str, bytes]:
    sender = f"sam{tag}{n}@bench.example"
    return sender, TEMPLATE.format(sender=sender, mid=f"{tag}.{n}").encode()


async def _reply(reader: asyncio.StreamReader) -> str:
    while True:
        line = (await reader.readline()).decode()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != "-":
            return line


async def client(port: int, tag: str, until: float, latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        writer.write(b"EHLO bench.example\r\n")
        await _reply(reader)
        n = 0
        while time.monotonic() < until:
            sender, raw = message(tag, n)
            n += 1
            started = time.monotonic()
            for command in (f"MAIL FROM:<{sender}>\r\n".encode(), f"RCPT TO:<{RCPT}>\r\n".encode(), b"DATA\r\n"):
                writer.write(command)
                await _reply(reader)
            writer.write(raw + b".\r\n")
            answer = await _reply(reader)
            if not answer.startswith("250"):
                errors.append(answer.strip())
                continue
            latencies.append(time.monotonic() - started)
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def main(port: int, clients: int, duration: float, tag: str) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    until = started + duration
    await asyncio.gather(*(client(port, f"{tag}c{i}", until, latencies, errors) for i in range(clients)))
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "messages": len(latencies),
        "seconds": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--tag", default="x")
    args = parser.parse_args()
    print(json.dumps(uvloop.run(main(args.port, args.clients, args.duration, args.tag))))
