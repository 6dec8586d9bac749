"""The naive HTTP floor: a bare FastAPI route per provider that verifies an HMAC,
validates a pydantic model and awaits one XADD.

Written the way a first version would be: redis-py's default (unbounded) pool,
one XADD per request, no dedupe, no routing. The three routes accept exactly the
requests frontdesk's routes accept, signed with the same secrets:

- `POST /webhooks/{agent}`: Standard Webhooks (HMAC-SHA256 of "id.timestamp.body");
- `POST /slack/events`: Slack's v0 signature (HMAC-SHA256 of "v0:timestamp:body");
- `POST /twilio/sms`: Twilio's X-Twilio-Signature (HMAC-SHA1 of URL + sorted form).

Settings come from BENCH_REDIS_URL, BENCH_WEBHOOK_SECRET, BENCH_SLACK_SECRET,
BENCH_TWILIO_TOKEN and BENCH_PUBLIC_URL.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import time
from urllib.parse import parse_qsl

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

WEBHOOK_KEY = base64.b64decode(os.environ.get("BENCH_WEBHOOK_SECRET", "whsec_").removeprefix("whsec_"))
SLACK_SECRET = os.environ.get("BENCH_SLACK_SECRET", "").encode()
TWILIO_TOKEN = os.environ.get("BENCH_TWILIO_TOKEN", "").encode()
PUBLIC_URL = os.environ.get("BENCH_PUBLIC_URL", "").rstrip("/")
TOLERANCE = 300
TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response />'


class WebhookBody(BaseModel):
    text: str
    conversation: str | None = None
    data: dict | None = None
    callback_url: str | None = None


class SlackEvent(BaseModel):
    type: str
    user: str
    text: str = ""
    channel: str
    ts: str
    thread_ts: str | None = None


class SlackEnvelope(BaseModel):
    type: str
    team_id: str
    event_id: str
    event: SlackEvent


class Sms(BaseModel):
    MessageSid: str
    From: str
    To: str
    Body: str = ""


r: aioredis.Redis


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    global r
    r = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    yield
    await r.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post("/webhooks/{agent}")
async def webhook(agent: str, request: Request) -> Response:
    body = await request.body()
    msg_id = request.headers.get("webhook-id", "")
    stamp = request.headers.get("webhook-timestamp", "0")
    if abs(time.time() - int(stamp)) > TOLERANCE:
        raise HTTPException(401, "stale")
    mac = hmac.new(WEBHOOK_KEY, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    if not any(
        hmac.compare_digest(s.partition(",")[2], expected) for s in request.headers.get("webhook-signature", "").split()
    ):
        raise HTTPException(401, "bad signature")
    payload = WebhookBody.model_validate_json(body)
    await r.xadd("floor:inbound", {"id": msg_id, "agent": agent, "d": payload.model_dump_json()})
    return JSONResponse({"id": msg_id}, status_code=202)


@app.post("/slack/events")
async def slack(request: Request) -> Response:
    body = await request.body()
    stamp = request.headers.get("x-slack-request-timestamp", "0")
    if abs(time.time() - int(stamp)) > TOLERANCE:
        raise HTTPException(401, "stale")
    expected = "v0=" + hmac.new(SLACK_SECRET, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(request.headers.get("x-slack-signature", ""), expected):
        raise HTTPException(401, "bad signature")
    envelope = SlackEnvelope.model_validate_json(body)
    await r.xadd("floor:inbound", {"id": envelope.event_id, "d": envelope.event.model_dump_json()})
    return Response(status_code=200)


@app.post("/twilio/sms")
async def sms(request: Request) -> Response:
    body = await request.body()
    form = parse_qsl(body.decode(), keep_blank_values=True)
    signed = PUBLIC_URL + request.url.path + "".join(k + v for k, v in sorted(form))
    expected = base64.b64encode(hmac.new(TWILIO_TOKEN, signed.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(request.headers.get("x-twilio-signature", ""), expected):
        raise HTTPException(403, "bad signature")
    message = Sms.model_validate(dict(form))
    await r.xadd("floor:inbound", {"id": message.MessageSid, "d": message.model_dump_json()})
    return Response(TWIML, media_type="text/xml")


# HumanLayer's API, create and poll (gateway/humanlayer): the call is stored as it came, under its id,
# and read back; a second create of an id returns the first (SET NX), as frontdesk's does.
class FunctionCallSpec(BaseModel):
    fn: str
    kwargs: dict


class FunctionCall(BaseModel):
    run_id: str
    call_id: str
    spec: FunctionCallSpec


@app.post("/humanlayer/v1/function_calls")
async def hl_create(call: FunctionCall) -> Response:
    stored = {**call.model_dump(mode="json"), "status": None}
    text = json.dumps(stored)
    if not await r.set(f"floor:hl:{call.call_id}", text, nx=True):
        text = (await r.get(f"floor:hl:{call.call_id}")).decode()
    return Response(text, media_type="application/json")


@app.get("/humanlayer/v1/function_calls/{call_id}")
async def hl_get(call_id: str) -> Response:
    text = await r.get(f"floor:hl:{call_id}")
    if text is None:
        raise HTTPException(404, "no such call")
    return Response(text, media_type="application/json")
