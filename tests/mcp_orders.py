"""A real MCP server written with the SDK, for the agent kit's MCP tests: an order desk.

    python tests/mcp_orders.py stdio          # over stdin/stdout (the runtime starts it)
    python tests/mcp_orders.py http [PORT]    # streamable HTTP on 127.0.0.1, port printed first

Every call it runs is appended as a JSON line to $MCP_ORDERS_LOG, so a test can count runs
across processes (the server is a child process in both modes).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from typing import TypedDict

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("orders")


def _record(tool: str, **arguments: object) -> None:
    path = os.environ.get("MCP_ORDERS_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps({"tool": tool, "pid": os.getpid(), **arguments}) + "\n")


class Order(TypedDict):
    order_id: str
    status: str
    total: float


@server.tool()
def lookup_order(order_id: str) -> Order:
    """Look an order up by its number."""
    _record("lookup_order", order_id=order_id)
    return {"order_id": order_id, "status": "delivered", "total": 42.5}


@server.tool(name="orders.search")
def search(text: str, limit: int = 3) -> str:
    """Search orders by free text."""
    _record("orders.search", text=text)
    return f"{min(limit, 2)} orders match {text!r}"


@server.tool()
def refund(order_id: str, amount: float, ctx: Context) -> str:
    """Refund part or all of an order. Writes: a person approves it."""
    meta = ctx.request_context.meta or {}
    _record("refund", order_id=order_id, amount=amount, key=meta.get("frontdesk/idempotency-key"))
    return f"refunded {amount:g} on {order_id}"


@server.tool()
def cancel_order(order_id: str) -> str:
    """Cancel an order. Writes; this one crashes the server before it answers."""
    _record("cancel_order", order_id=order_id)
    os._exit(3)


@server.tool()
def broken_lookup(order_id: str) -> str:
    """A lookup whose database is down."""
    raise RuntimeError("the orders database is down")


@server.tool()
async def slow_report(seconds: float) -> str:
    """A report that takes a while."""
    await asyncio.sleep(seconds)
    return "report ready"


@server.tool()
def server_pid() -> int:
    """The server process's id (tests kill it to see the runtime reconnect)."""
    return os.getpid()


def _recording_auth(app):
    """The app, recording each request's Authorization header (tests check `headers_from` with it)."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            _record("http", authorization=headers.get(b"authorization", b"").decode())
        await app(scope, receive, send)

    return wrapped


def _serve_http(port: int) -> None:
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a test restarts it on the port it had
    sock.bind(("127.0.0.1", port))
    sock.listen(64)  # connections wait in the backlog from here on, before uvicorn accepts them
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(_recording_auth(server.streamable_http_app()), log_level="warning", lifespan="on")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        _serve_http(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    else:
        server.run("stdio")
