"""Signed HTTP load with wrk: the requests are signed here, in advance, and replayed by signed.lua.

wrk (a C load generator, one thread, its own process) keeps 50 connections busy
and measures latency itself; its Lua has no HMAC, so every request — a unique id,
a fresh timestamp, its signature — is written to a file first. Each id is sent
once unless a run outlasts the file (`wraps` > 0 says so).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

LUA = Path(__file__).with_name("signed.lua")
KINDS = ("webhook", "slack", "sms")
AGENT = "calculator"  # a sample agent; FRONTDESK_DEFAULT_AGENT names it too
# Every request comes from a caller of its own (its callback URL, a Slack user, a phone
# number): frontdesk's per-sender rate limit (FRONTDESK_RATE_LIMIT) counts each, none trips it.
WEBHOOK_TEXT = {
    "text": "Hello, could you check the status of order 1234 for me?",
    "data": {"order": 1234, "customer": "c_981"},
}


@dataclass(frozen=True)
class Secrets:
    """What both servers verify against; made fresh for each benchmark run."""

    webhook: str
    slack: str
    twilio: str

    @classmethod
    def new(cls) -> Secrets:
        return cls(
            webhook="whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
            slack=secrets.token_hex(16),
            twilio=secrets.token_hex(16),
        )


def path_for(kind: str) -> str:
    return {"webhook": f"/webhooks/{AGENT}", "slack": "/slack/events", "sms": "/twilio/sms", "whatsapp": "/twilio/sms"}[
        kind
    ]


def write_requests(
    file: Path,
    kind: str,
    n: int,
    keys: Secrets,
    public_url: str,
    tag: str,
    callback: str = "https://caller{i}.bench.example/hook",
) -> None:
    """`n` requests of `kind`, each with its own id and sender, signed now; `callback`: webhook callback URL pattern."""
    now = int(time.time())
    path = path_for(kind)
    with file.open("w") as out:
        if kind == "webhook":
            key = base64.b64decode(keys.webhook.removeprefix("whsec_"))
            for i in range(n):
                msg_id = f"msg_{tag}_{i}"
                body = json.dumps({**WEBHOOK_TEXT, "callback_url": callback.format(i=i)}, separators=(",", ":"))
                mac = hmac.new(key, f"{msg_id}.{now}.{body}".encode(), hashlib.sha256).digest()
                sig = "v1," + base64.b64encode(mac).decode()
                out.write(
                    f"{path}\t{body}\tcontent-type\tapplication/json\twebhook-id\t{msg_id}\twebhook-timestamp\t{now}\twebhook-signature\t{sig}\n"
                )
        elif kind == "slack":
            secret = keys.slack.encode()
            for i in range(n):
                ts = f"{now}.{i:06d}"
                body = json.dumps(
                    {
                        "token": "unused",
                        "team_id": "T0BENCH",
                        "api_app_id": "A0BENCH",
                        "type": "event_callback",
                        "event_id": f"Ev{tag}{i}",
                        "event_time": now,
                        "event": {
                            "type": "app_mention",
                            "user": f"U{tag}{i}",
                            "text": "<@U0BOT> could you check order 1234?",
                            "ts": ts,
                            "channel": "C0BENCH",
                            "event_ts": ts,
                            "channel_type": "channel",
                        },
                    },
                    separators=(",", ":"),
                )
                sig = "v0=" + hmac.new(secret, f"v0:{now}:{body}".encode(), hashlib.sha256).hexdigest()
                out.write(
                    f"{path}\t{body}\tcontent-type\tapplication/json\tx-slack-request-timestamp\t{now}\tx-slack-signature\t{sig}\n"
                )
        elif kind in ("sms", "whatsapp"):
            # WhatsApp comes to the same Twilio webhook; the `whatsapp:` addresses tell it apart.
            scheme = "whatsapp:" if kind == "whatsapp" else ""
            validator = RequestValidator(keys.twilio)
            url = public_url.rstrip("/") + path
            for i in range(n):
                form = {
                    "ToCountry": "US",
                    "SmsMessageSid": f"SM{tag}{i:020d}",
                    "NumMedia": "0",
                    "SmsSid": f"SM{tag}{i:020d}",
                    "SmsStatus": "received",
                    "Body": "Hello, could you check order 1234?",
                    "To": f"{scheme}+15550009999",
                    "NumSegments": "1",
                    "MessageSid": f"SM{tag}{i:020d}",
                    "AccountSid": "AC" + "0" * 32,
                    "From": f"{scheme}+1555{i % 10_000_000:07d}",
                    "ApiVersion": "2010-04-01",
                }
                sig = validator.compute_signature(url, form)
                out.write(
                    f"{path}\t{urlencode(form)}\tcontent-type\tapplication/x-www-form-urlencoded\tx-twilio-signature\t{sig}\n"
                )
        else:
            raise ValueError(kind)


def run_wrk(base_url: str, file: Path, *, duration: float, connections: int = 50, threads: int = 1) -> dict:
    """One wrk run; its JSON summary with requests/s added."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (make bench does it)")
    args = [
        exe,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base_url,
        "--",
        str(file),
        str(threads),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("{")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(
        result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return result
