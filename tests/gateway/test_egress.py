"""The client for caller-supplied URLs: one lookup, every address checked, TLS still on the name."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpcore
import httpx
import pytest
import trustme

from gateway import egress
from gateway.errors import RefusedDestination


class _Names:
    """A resolver answering from a table, counting lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such name {host}")
        return self.table[host]


class _Refusing(httpcore.AsyncNetworkBackend):
    """An inner backend that records where it was asked to connect and connects nowhere."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.asked.append((host, port))
        raise httpcore.ConnectError("refused by the test")


@asynccontextmanager
async def _tls_server(ca: trustme.CA, name: str) -> AsyncIterator[tuple[int, list[str], list[bytes]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for `name`; yields (port, SNI names, requests)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    names: list[str] = []
    requests: list[bytes] = []
    context.sni_callback = lambda sock, server_name, ctx: names.append(server_name)  # type: ignore[assignment,misc]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    async with server:
        yield server.sockets[0].getsockname()[1], names, requests


async def test_tls_is_checked_against_the_name_while_the_connection_goes_to_the_checked_address(settings):
    settings = settings.model_copy(update={"callback_allow_private": True})  # the server is on loopback
    ca = trustme.CA()
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    names = _Names({"callback.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
    async with _tls_server(ca, "callback.example") as (port, sni, requests):
        async with egress.client(settings, resolver=names, verify=trust) as client:
            response = await client.get(f"https://callback.example:{port}/hook")
            assert response.status_code == 200 and response.text == "ok"
            # The same address under a name the certificate does not carry: refused by TLS.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
                await client.get(f"https://other.example:{port}/hook")
    assert sni[0] == "callback.example"
    assert b"\r\nhost: callback.example:" in requests[0].lower()
    assert names.asked == ["callback.example", "other.example"]


@pytest.mark.parametrize(
    "addresses",
    [["93.184.216.34", "10.0.0.7"], ["127.0.0.1"], ["169.254.169.254"], ["::1"], []],
)
async def test_every_address_of_the_name_must_be_public_before_any_is_tried(settings, addresses):
    inner = _Refusing()
    names = _Names({"hooks.example": addresses})
    async with egress.client(settings, resolver=names, inner=inner) as client:
        with pytest.raises(RefusedDestination, match="does not resolve"):
            await client.post("http://hooks.example/x", content=b"{}")
    assert inner.asked == [] and names.asked == ["hooks.example"]


async def test_a_name_that_does_not_resolve_is_refused_not_retried(settings):
    inner = _Refusing()
    async with egress.client(settings, resolver=_Names({}), inner=inner) as client:
        with pytest.raises(RefusedDestination) as refused:
            await client.post("http://nowhere.example/x")
    assert not refused.value.retryable and inner.asked == []


async def test_the_checked_addresses_are_tried_in_order_and_only_those(settings):
    inner = _Refusing()
    names = _Names({"hooks.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    async with egress.client(settings, resolver=names, inner=inner) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("http://hooks.example:8443/x")
    assert inner.asked == [("93.184.216.34", 8443), ("2606:2800:220:1:248:1893:25c8:1946", 8443)]
    assert names.asked == ["hooks.example"]


async def test_a_literal_address_is_checked_without_a_lookup(settings):
    inner = _Refusing()
    names = _Names({})
    async with egress.client(settings, resolver=names, inner=inner) as client:
        with pytest.raises(RefusedDestination, match="public address"):
            await client.get("http://127.0.0.1:9/x")
        with pytest.raises(httpx.ConnectError):
            await client.get("http://93.184.216.34/x")
    assert names.asked == [] and inner.asked == [("93.184.216.34", 80)]


async def test_the_environment_proxy_is_not_used(settings, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    inner = _Refusing()
    async with egress.client(settings, resolver=_Names({"hooks.example": ["93.184.216.34"]}), inner=inner) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://hooks.example/x")
    assert inner.asked == [("93.184.216.34", 80)]  # straight to the checked address, not to the proxy
