"""Tools from MCP servers (agents/kit/mcp.py), against a real MCP server written with the SDK
(tests/mcp_orders.py), over stdio (a child process the runtime starts) and streamable HTTP
(a server process on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import background, eventually
from servers import app_server

from agents.kit import Agent, parse_blocks
from agents.kit.demo import done
from agents.kit.mcp import MAX_NAME, McpPool, tool_name
from agents.kit.testing import assert_next_step, thread_of
from gateway.config import McpServerConfig, load_config
from gateway.errors import ConfigError
from gateway.events import ApprovalDecision, Contact, Thread, UserMessage
from gateway.runtime import running
from gateway.web.app import create_app
from gateway.worker import Worker

ORDERS = Path(__file__).resolve().parents[1] / "mcp_orders.py"
READ_ONLY = ["lookup_order", "orders.search", "broken_lookup", "slow_report", "server_pid"]


class OrderDesk(Agent):
    """Looks an order up, then refunds it after approval (the refund is the MCP server's write tool)."""

    name = "orderdesk"
    description = "Refunds orders through the orders MCP server."
    prompt = Path(__file__).with_name("orderdesk.md.j2")

    def demo(self, context: str, tools: list[str]) -> tuple[str, dict[str, Any]]:
        blocks = parse_blocks(context)
        last = blocks[-1]
        calls = [b for b in blocks if b.tag in ("tool_call", "approval_requested")]
        if last.tag == "error":
            return done(f"I could not finish: {last.body}")
        if last.tag == "approval_decision" and last.attrs.get("approved") == "false":
            return done("Not refunded.")
        if not calls:
            return "orders__lookup_order", {"order_id": "A1"}
        if calls[-1].attrs.get("tool") == "orders__lookup_order":
            return "orders__refund", {"order_id": "A1", "amount": 5}
        return done(f"Done: {last.body}")


def desk(servers: dict[str, McpServerConfig]):
    """A factory for the runtime: an OrderDesk taking its tools from `servers`."""
    cls = type("OrderDesk", (OrderDesk,), {"mcp_servers": servers})
    return lambda rt: cls(rt)


def runs(log: Path, tool: str | None = None) -> list[dict[str, Any]]:
    """The calls the server ran (its own record, across its processes)."""
    if not log.exists():
        return []
    found = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in found if tool is None or r["tool"] == tool]


@pytest.fixture
def orders_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "orders.jsonl"
    monkeypatch.setenv("MCP_ORDERS_LOG", str(path))  # reaches the stdio child only through env_from
    return path


@pytest.fixture
def stdio(orders_log: Path) -> McpServerConfig:
    return McpServerConfig(command=[sys.executable, str(ORDERS)], env_from=["MCP_ORDERS_LOG"], read_only=READ_ONLY)


@pytest.fixture
def http_url(orders_log: Path):
    """The orders server over streamable HTTP, a process of its own on 127.0.0.1."""
    process, port = start_http()
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_http(process)


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest, stdio: McpServerConfig) -> McpServerConfig:
    if request.param == "stdio":
        return stdio
    return McpServerConfig(url=request.getfixturevalue("http_url"), read_only=READ_ONLY)


def new_thread(text: str = "refund order A1") -> tuple[Thread, UserMessage]:
    origin = Contact(channel="sms", address="+15550001")
    thread = Thread(id="th_mcp", agent="orderdesk", origin=origin, approvers=["sms:+15550001"])
    return thread, UserMessage(text=text, sender="sms:+15550001", channel="sms")


def approve(thread: Thread) -> ApprovalDecision:
    request = thread.events[-1]
    assert request.type == "approval_requested"
    return ApprovalDecision(call_id=request.call_id, approved=True, by="sms:+15550001")


# ---------------------------------------------------------------- the tools


async def test_each_mcp_tool_is_a_step_with_its_schema_and_writes_need_approval(settings, server):
    async with running(settings, builtins=False, agents=[desk({"orders": server})]) as rt:
        tools = {t["name"]: t for t in rt.agents["orderdesk"].tools()}
    assert set(tools) == {
        "orders__lookup_order",
        "orders__orders_search",  # "orders.search": a dot is not allowed in a model API's function name
        "orders__refund",
        "orders__broken_lookup",
        "orders__slow_report",
        "orders__server_pid",
        "orders__cancel_order",
        "request_human_input",
        "done_for_now",
    }
    assert tools["orders__refund"]["requires_approval"] is True  # not declared read-only: deny by default
    assert tools["orders__lookup_order"]["requires_approval"] is False
    assert tools["orders__refund"]["description"].startswith("Refund part or all of an order.")
    assert tools["orders__refund"]["parameters"]["required"] == ["order_id", "amount"]
    assert tools["orders__orders_search"]["parameters"]["properties"]["limit"]["default"] == 3


async def test_tools_limits_which_tools_the_agent_gets(settings, stdio):
    only = stdio.model_copy(update={"tools": ["lookup_order"]})
    async with running(settings, builtins=False, agents=[desk({"orders": only})]) as rt:
        names = [t["name"] for t in rt.agents["orderdesk"].tools()]
    assert names == ["request_human_input", "done_for_now", "orders__lookup_order"]


def test_tool_names_fit_the_model_apis():
    assert tool_name("orders", "orders.search/v2") == "orders__orders_search_v2"
    long = tool_name("orders", "x" * 100)
    assert len(long) == MAX_NAME and long.startswith("orders__xxx")
    assert tool_name("orders", "a.b", taken={"orders__a_b"}) != "orders__a_b"  # "a_b" and "a.b" stay apart


# ---------------------------------------------------------------- the loop


async def test_a_read_tool_runs_and_a_write_tool_pauses_for_approval_then_runs_once(settings, server, orders_log):
    async with running(settings, builtins=False, agents=[desk({"orders": server})]) as rt:
        agent = rt.agents["orderdesk"]
        thread, first = new_thread()
        thread = await agent.step(thread, first)
        assert [e.type for e in thread.events] == ["user_message", "tool_call", "tool_result"]
        assert thread.events[-1].result == {"order_id": "A1", "status": "delivered", "total": 42.5}
        thread = await agent.step(thread, None)
        assert thread.status == "waiting_approval"
        assert thread.events[-1].tool == "orders__refund"
        assert thread.events[-1].arguments == {"order_id": "A1", "amount": 5}
        assert runs(orders_log, "refund") == []  # nothing written before the approval
        thread = await agent.step(thread, approve(thread))
        assert [e.type for e in thread.events[-2:]] == ["tool_call", "tool_result"], thread.events[-1]
        assert thread.events[-1].result == {"result": "refunded 5 on A1"}  # the SDK wraps a plain return value
        thread = await agent.step(thread, None)
    assert thread.status == "done" and "refunded 5 on A1" in thread.events[-1].text
    call_id = thread.events[-3].call_id
    # One run, carrying the same idempotency key a built-in tool gets (thread id and call id).
    assert [(r["order_id"], r["amount"], r["key"]) for r in runs(orders_log, "refund")] == [
        ("A1", 5, f"th_mcp:{call_id}")
    ]


async def test_an_approval_given_after_a_restart_runs_the_stored_call_on_the_new_server(settings, stdio, orders_log):
    async with running(settings, builtins=False, agents=[desk({"orders": stdio})]) as rt:
        agent = rt.agents["orderdesk"]
        thread, first = new_thread()
        thread = await agent.step(await agent.step(thread, first), None)
        assert thread.status == "waiting_approval"
    async with running(settings, builtins=False, agents=[desk({"orders": stdio})]) as rt:  # another process
        thread = await rt.agents["orderdesk"].step(thread, approve(thread))
    assert thread.events[-1].type == "tool_result"
    assert [(r["order_id"], r["amount"]) for r in runs(orders_log, "refund")] == [("A1", 5)]


async def test_an_agent_authors_test_asserts_the_next_mcp_step_without_calling_the_server(settings, stdio, orders_log):
    async with running(settings, builtins=False, agents=[desk({"orders": stdio})]) as rt:
        agent = rt.agents["orderdesk"]
        await assert_next_step(agent, thread_of(agent, "refund order A1"), "orders__lookup_order", order_id="A1")
    assert runs(orders_log) == []  # an eval's turn runs no tool


async def test_arguments_that_fail_the_servers_schema_are_an_error_the_model_sees(settings, stdio, orders_log):
    async with running(settings, builtins=False, agents=[desk({"orders": stdio})]) as rt:
        thread = await script(rt.agents["orderdesk"], "orders__lookup_order", {"order_id": 7})
    error = thread.events[-1]
    assert error.type == "error" and error.kind == "invalid_arguments"
    assert "7 is not of type 'string'" in error.message
    assert runs(orders_log) == []  # the server never saw the call


async def script(agent: Agent, tool: str, arguments: dict[str, Any]) -> Thread:
    """One turn in which the model calls `tool` with `arguments`."""
    agent.model._script = lambda context, tools: (tool, arguments)
    thread, first = new_thread()
    return await agent.step(thread, first)


async def test_a_tool_error_and_a_timeout_are_error_events(settings, stdio):
    # The same server twice: its tools under "quick" may take 0.5 s, under "orders" the default 30 s,
    # so only the 30 s report can run out of time, however loaded the machine is.
    quick = stdio.model_copy(update={"timeout": 0.5})
    async with running(settings, builtins=False, agents=[desk({"orders": stdio, "quick": quick})]) as rt:
        agent = rt.agents["orderdesk"]
        failed = (await script(agent, "orders__broken_lookup", {"order_id": "A1"})).events[-1]
        slow = (await script(agent, "quick__slow_report", {"seconds": 30})).events[-1]
        after = (await script(agent, "orders__lookup_order", {"order_id": "A2"})).events[-1]
        assert len(McpPool.of(rt)._connections) == 1  # one session serves both names
    assert failed.type == "error" and failed.kind == "tool_error"
    assert failed.message.startswith("orders__broken_lookup failed: ToolFailed:")
    assert "broken_lookup" in failed.message
    assert slow.type == "error" and slow.kind == "tool_error" and "no answer within 0.5s" in slow.message
    assert after.type == "tool_result" and after.result["order_id"] == "A2"  # the session outlived the timeout


# ---------------------------------------------------------------- the runtime owns the sessions


async def pid_of(agent: Agent) -> int:
    result = (await script(agent, "orders__server_pid", {})).events[-1]
    assert result.type == "tool_result", result
    return int(result.result["result"])


async def test_one_stdio_process_is_shared_and_is_gone_after_shutdown(settings, stdio):
    other = type("Other", (OrderDesk,), {"name": "other", "mcp_servers": {"shop": stdio}})
    async with running(settings, builtins=False, agents=[desk({"orders": stdio}), lambda rt: other(rt)]) as rt:
        pid = await pid_of(rt.agents["orderdesk"])
        assert "shop__server_pid" in [t["name"] for t in rt.agents["other"].tools()]
        os.kill(pid, 0)  # alive while the runtime runs
        assert len(McpPool.of(rt)._connections) == 1  # two agents, one server: one session
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_killed_stdio_server_is_started_again_for_the_next_call(settings, stdio, orders_log):
    async with running(settings, builtins=False, agents=[desk({"orders": stdio})]) as rt:
        agent = rt.agents["orderdesk"]
        first = await pid_of(agent)
        os.kill(first, signal.SIGKILL)
        second = await pid_of(agent)  # a read: the lost session is opened again and the call retried
        assert second != first
        os.kill(second, signal.SIGKILL)
        thread = await script(agent, "orders__refund", {"order_id": "A9", "amount": 1})
        thread = await agent.step(thread, approve(thread))  # a write: checked with a ping, sent once
    assert thread.events[-1].type == "tool_result" and thread.events[-1].result == {"result": "refunded 1 on A9"}
    refunds = runs(orders_log, "refund")
    assert len(refunds) == 1 and refunds[0]["pid"] not in (first, second)


async def test_concurrent_calls_share_the_session_and_one_reconnect(settings, stdio):
    async with running(settings, builtins=False, agents=[desk({"orders": stdio})]) as rt:
        agent = rt.agents["orderdesk"]
        before = set(await asyncio.gather(*(pid_of(agent) for _ in range(10))))
        assert len(before) == 1  # ten calls at once, one server
        os.kill(before.pop(), signal.SIGKILL)
        after = set(await asyncio.gather(*(pid_of(agent) for _ in range(10))))
    assert len(after) == 1  # ten calls met the dead session at once; one new server answered them all


async def test_a_write_call_that_loses_the_server_midway_is_not_sent_again(settings, stdio, orders_log):
    async with running(settings, builtins=False, agents=[desk({"orders": stdio})]) as rt:
        agent = rt.agents["orderdesk"]
        thread = await script(agent, "orders__cancel_order", {"order_id": "A3"})
        thread = await agent.step(thread, approve(thread))  # the server records it, then dies before answering
        error = thread.events[-1]
        after = (await script(agent, "orders__lookup_order", {"order_id": "A3"})).events[-1]
    assert error.type == "error" and error.kind == "tool_error"
    assert "lost during the call, so it may or may not have run; it was not sent again" in error.message
    assert len(runs(orders_log, "cancel_order")) == 1
    assert after.type == "tool_result"  # the next call has a new session


async def test_a_server_that_cannot_start_leaves_its_tools_out_without_stopping_the_runtime(settings, tmp_path):
    missing = McpServerConfig(command=[str(tmp_path / "no-such-server")], read_only=["x"])
    async with running(settings, builtins=False, agents=[desk({"orders": missing})]) as rt:
        agent = rt.agents["orderdesk"]
        assert [t["name"] for t in agent.tools()] == ["request_human_input", "done_for_now"]
        thread = await script(agent, "orders__lookup_order", {"order_id": "A1"})
    error = thread.events[-1]
    assert error.type == "error" and error.kind == "unknown_tool"  # the model hears which tools it has


async def test_a_child_gets_only_the_variables_it_is_given(settings, stdio, orders_log, tmp_path):
    bare = stdio.model_copy(update={"env_from": []})
    async with running(settings, builtins=False, agents=[desk({"orders": bare})]) as rt:
        result = (await script(rt.agents["orderdesk"], "orders__lookup_order", {"order_id": "A1"})).events[-1]
    assert result.type == "tool_result" and not orders_log.exists()  # MCP_ORDERS_LOG is set here, not there
    elsewhere = tmp_path / "literal.jsonl"
    literal = stdio.model_copy(update={"env_from": [], "env": {"MCP_ORDERS_LOG": str(elsewhere)}})
    async with running(settings, builtins=False, agents=[desk({"orders": literal})]) as rt:
        await script(rt.agents["orderdesk"], "orders__lookup_order", {"order_id": "A2"})
    assert [r["order_id"] for r in runs(elsewhere, "lookup_order")] == ["A2"]


async def test_http_headers_come_from_the_environment_by_name(settings, http_url, orders_log, monkeypatch):
    monkeypatch.setenv("ORDERS_MCP_AUTH", "Bearer s3cret")
    config = McpServerConfig(url=http_url, headers_from={"Authorization": "ORDERS_MCP_AUTH"}, read_only=READ_ONLY)
    async with running(settings, builtins=False, agents=[desk({"orders": config})]) as rt:
        await script(rt.agents["orderdesk"], "orders__lookup_order", {"order_id": "A1"})
    seen = {r["authorization"] for r in runs(orders_log, "http")}
    assert seen == {"Bearer s3cret"}


async def test_a_server_down_at_start_up_is_tried_again_at_a_step_once_the_interval_has_passed(
    settings, orders_log, monkeypatch
):
    process, port = start_http()
    stop_http(process)  # a free port, with nothing listening on it yet
    config = McpServerConfig(url=f"http://127.0.0.1:{port}/mcp", read_only=READ_ONLY)
    monkeypatch.setattr("agents.kit.agent.MCP_RETRY_SECONDS", 3600.0)
    async with running(settings, builtins=False, agents=[desk({"orders": config})]) as rt:
        agent = rt.agents["orderdesk"]
        assert "orders__lookup_order" not in [t["name"] for t in agent.tools()]
        process, _ = start_http(port)
        try:
            early = (await script(agent, "orders__lookup_order", {"order_id": "A1"})).events[-1]
            agent._mcp_retry_at = 0.0  # the interval has passed
            later = (await script(agent, "orders__lookup_order", {"order_id": "A1"})).events[-1]
        finally:
            stop_http(process)
    assert early.type == "error" and early.kind == "unknown_tool"  # within the interval: not tried again
    assert later.type == "tool_result" and later.result["order_id"] == "A1"


# ---------------------------------------------------------------- configuration


def test_frontdesk_toml_configures_servers_per_agent(tmp_path):
    path = tmp_path / "frontdesk.toml"
    path.write_text(
        "[agents.orderdesk.mcp.orders]\n"
        'command = ["python", "tests/mcp_orders.py"]\n'
        'read_only = ["lookup_order"]\n'
        "timeout = 5\n"
    )
    server = load_config(path).agent("orderdesk").mcp["orders"]
    assert server.command == ["python", "tests/mcp_orders.py"] and server.timeout == 5
    assert server.read_only == ["lookup_order"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('command = ["x"]\nurl = "http://127.0.0.1:1/mcp"\n', "agents.orderdesk.mcp.orders"),
        ("read_only = []\n", "agents.orderdesk.mcp.orders"),
        ('url = "ftp://example.com"\n', "agents.orderdesk.mcp.orders.url"),
        ('command = ["x"]\nreadonly = ["a"]\n', "agents.orderdesk.mcp.orders.readonly"),
    ],
)
def test_a_bad_server_entry_stops_start_up_naming_the_key(tmp_path, body, key):
    path = tmp_path / "frontdesk.toml"
    path.write_text("[agents.orderdesk.mcp.orders]\n" + body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f": {key}: " in str(caught.value)


def test_a_server_name_must_make_a_valid_tool_prefix(tmp_path):
    path = tmp_path / "frontdesk.toml"
    path.write_text('[agents.orderdesk.mcp."my.orders"]\ncommand = ["x"]\n')
    with pytest.raises(ConfigError, match="agents.orderdesk.mcp: .*'my.orders'"):
        load_config(path)


# ---------------------------------------------------------------- end to end: API, worker, outbox


async def test_end_to_end_through_the_api_with_the_server_from_frontdesk_toml(settings, server, orders_log, tmp_path):
    reach = f"url = {json.dumps(server.url)}" if server.url else f"command = {json.dumps(server.command)}"
    config = tmp_path / "frontdesk.toml"
    config.write_text(
        f'[agents.orderdesk.mcp.orders]\n{reach}\nenv_from = ["MCP_ORDERS_LOG"]\nread_only = ["lookup_order"]\n'
    )
    settings = settings.model_copy(update={"config_path": config})
    async with running(settings, builtins=False, agents=[lambda rt: OrderDesk(rt)]) as rt:
        async with (
            app_server(create_app(settings, rt)) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            background(Worker(rt, "w1")),
        ):
            listed = (await client.get("/api/v1/agents")).json()["agents"]
            tools = {t["name"]: t["requires_approval"] for t in listed[0]["tools"]}
            assert tools["orders__lookup_order"] is False and tools["orders__refund"] is True
            launched = await client.post("/api/v1/threads", json={"agent": "orderdesk", "text": "refund A1"})
            thread_id = launched.json()["id"]

            async def thread_when(status: str) -> dict | None:
                thread = (await client.get(f"/api/v1/threads/{thread_id}")).json()
                return thread if thread["status"] == status else None

            waiting = await eventually(lambda: thread_when("waiting_approval"))
            assert runs(orders_log, "refund") == []
            request = waiting["events"][-1]
            answer = await client.post(
                f"/api/v1/threads/{thread_id}/events",
                json={"type": "approval_decision", "call_id": request["call_id"], "approved": True},
            )
            assert answer.status_code == 202
            finished = await eventually(lambda: thread_when("done"))
    types = [e["type"] for e in finished["events"] if e["type"] not in ("delivery", "note")]
    assert types == [
        "user_message",
        "tool_call",
        "tool_result",
        "approval_requested",
        "approval_decision",
        "tool_call",
        "tool_result",
        "done_for_now",
    ]
    assert [(r["order_id"], r["amount"]) for r in runs(orders_log, "refund")] == [("A1", 5)]
    assert len(runs(orders_log, "lookup_order")) == 1


def start_http(port: int = 0) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, str(ORDERS), "http", str(port)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("PORT "), line
    return process, int(line.split()[1])


def stop_http(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)
    assert process.stdout is not None
    process.stdout.close()


async def test_an_http_server_that_went_away_is_an_error_event_and_is_reached_again_when_back(settings, orders_log):
    process, port = start_http()
    config = McpServerConfig(url=f"http://127.0.0.1:{port}/mcp", read_only=READ_ONLY)
    try:
        async with running(settings, builtins=False, agents=[desk({"orders": config})]) as rt:
            agent = rt.agents["orderdesk"]
            assert (await script(agent, "orders__lookup_order", {"order_id": "A1"})).events[-1].type == "tool_result"
            stop_http(process)
            error = (await script(agent, "orders__lookup_order", {"order_id": "A2"})).events[-1]
            process, _ = start_http(port)  # back, on the same address
            back = (await script(agent, "orders__lookup_order", {"order_id": "A3"})).events[-1]
    finally:
        stop_http(process)
    assert error.type == "error" and error.kind == "tool_error"
    assert f"MCP server 'orders' (http://127.0.0.1:{port}/mcp) could not be reached: ConnectError" in error.message
    assert back.type == "tool_result" and back.result["order_id"] == "A3", back
