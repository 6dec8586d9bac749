"""Fixtures for the dashboard tests."""

from __future__ import annotations

import pytest
from dashkit import Sink
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from servers import LoopbackServer


@pytest.fixture
def sink():
    app = FastAPI()
    state = Sink(url="")

    @app.post("/send")
    async def send(request: Request):
        if state.failing:
            return JSONResponse({"error": "down"}, status_code=500)
        state.received.append(await request.json())
        return JSONResponse({"ok": True}, headers={"x-message-id": f"msg-{len(state.received)}"})

    with LoopbackServer(app) as server:
        state.url = f"{server.url}/send"
        yield state
