"""Calls to addresses someone outside gave us (webhook callbacks, completion webhooks).

Such a URL is checked twice. When it arrives, `check_url` refuses what it can read
as unsafe (not http(s), not allowlisted, a literal private address, a local name).
When we call it, the name is resolved once, inside the connection, and the
connection goes to exactly an address that was checked: `PinnedBackend` is the
network layer of httpx's connection pool, so there is no second lookup for a DNS
server to answer differently (rebinding). The URL is untouched, so the `Host`
header, TLS SNI and the certificate check all stay on the original name.

Every such call goes through the one client `client()` builds (the runtime's
`egress`): no proxy from the environment (a proxy would resolve the name itself),
no redirects (a 3xx is the callback's answer, not a new place to go).
FRONTDESK_CALLBACK_ALLOW_PRIVATE turns the address check off, not the pinning.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from gateway.errors import Malformed, RefusedDestination

Resolve = Callable[[str, int], Awaitable[list[str]]]


def check_url(url: str, settings) -> str:
    """Refuse a URL we must not call: not http(s), not allowlisted, private or loopback."""
    return _checked(url, settings.callback_allowlist, settings.callback_allow_private)


# A caller sends the same callback URL with every message: checked once, not on every request
# (about 2 % of a webhook's CPU, benchmarks/NOTES.md). A refusal raises and is not cached.
@functools.lru_cache(maxsize=4096)
def _checked(url: str, allowlist: str, allow_private: bool) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:  # e.g. "http://[" (an unclosed IPv6 literal)
        raise Malformed("callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Malformed("callback_url must be an http(s) URL")
    host = parts.hostname.lower()
    allow = [h.strip().lower() for h in allowlist.split(",") if h.strip()]
    if allow and not any(host == a or (a.startswith(".") and host.endswith(a)) for a in allow):
        raise Malformed(f"callback host {host!r} is not in FRONTDESK_CALLBACK_ALLOWLIST")
    if not allow_private:
        try:
            if not ipaddress.ip_address(host).is_global:
                raise Malformed("callback_url points to a private or loopback address")
        except ValueError:
            if host == "localhost" or host.endswith(".localhost") or host.endswith(".internal"):
                raise Malformed("callback_url points to a private or loopback address") from None
    return url


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order, once each."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves a host once, checks every address, and connects only to those it checked."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolver: Resolve = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses a connection to `host` may use; raises RefusedDestination."""
        try:
            found = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                found = await self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise RefusedDestination(f"callback host {host!r} does not resolve: {exc}") from None
        if not found:
            raise RefusedDestination(f"callback host {host!r} does not resolve")
        # Every address, not just the one we would try first: the next attempt may use another.
        if not self.allow_private and not all(ipaddress.ip_address(a).is_global for a in found):
            raise RefusedDestination(f"callback host {host!r} does not resolve to a public address")
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in await self.addresses(host, port):
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # addresses() returns at least one
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination("callbacks never go to a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool on a `PinnedBackend`.

    httpx has no public way to hand its pool a network backend, so the pool is rebuilt
    here with the same TLS context (`_pool` is httpx's; pyproject caps httpx for it).
    """

    def __init__(self, backend: PinnedBackend, *, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=backend,
        )


def client(
    settings,
    *,
    resolver: Resolve = resolve,
    inner: httpcore.AsyncNetworkBackend | None = None,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 10,
) -> httpx.AsyncClient:
    """The client for caller-supplied URLs: pinned to checked addresses, no proxy, no redirects."""
    backend = PinnedBackend(allow_private=settings.callback_allow_private, resolver=resolver, inner=inner)
    return httpx.AsyncClient(
        transport=PinnedTransport(backend, verify=verify),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
