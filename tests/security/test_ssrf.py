"""SSRF: callback URLs and media references cannot make us call into our own network.

A webhook callback is checked when it arrives (scheme, allowlist, literal private
addresses, local names) and again when we send (every address the name resolves
to must be public), and redirects are never followed. An MMS media reference is
fetched only under our own account on the configured Twilio API origin.
"""

from __future__ import annotations

import socket

import httpcore
import pytest
from helpers import eventually
from plugins import EchoAgent
from pydantic import SecretStr
from seckit import WEBHOOK_SECRET, Callbacks, stack
from servers import LoopbackServer

from channels.twilio.media import allowed
from channels.webhook import channel as webhook_channel
from channels.webhook import check_callback
from gateway.errors import DeliveryFailed, Malformed
from gateway.events import OutboundMessage
from gateway.runtime import running

REFUSED_AT_THE_DOOR = [
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ftp://example.com/x",
    "http://127.0.0.1/x",
    "http://10.0.0.7/x",
    "http://172.16.5.4/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/x",
    "http://[::1]/x",
    "http://[fe80::1]/x",
    "http://[fc00::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://localhost/x",
    "http://LOCALHOST:8000/x",
    "http://api.localhost/x",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[/x",
    "http:///x",
]


@pytest.mark.parametrize("url", REFUSED_AT_THE_DOOR)
def test_callbacks_to_private_or_odd_places_are_refused(settings, url):
    with pytest.raises(Malformed):
        check_callback(url, settings)


def test_the_allowlist_narrows_callbacks_to_named_hosts(settings):
    settings = settings.model_copy(update={"callback_allowlist": "hooks.example.com, .partner.example"})
    assert check_callback("https://hooks.example.com/x", settings)
    assert check_callback("https://a.b.partner.example/x", settings)
    for url in ("https://example.com/x", "https://hooks.example.com.evil.test/x", "https://partner.example.evil/x"):
        with pytest.raises(Malformed):
            check_callback(url, settings)


@pytest.fixture
async def rt(settings):
    settings = settings.model_copy(update={"webhook_secret": SecretStr(WEBHOOK_SECRET)})
    async with running(settings, builtins=False, agents=[EchoAgent()], channels=[webhook_channel]) as rt:
        yield rt


def _out(url: str) -> OutboundMessage:
    return OutboundMessage(
        id="th_x-1",
        thread_id="th_x",
        agent="echo",
        channel="webhook",
        address=url,
        reply_to={"callback_url": url},
        text="hi",
    )


async def test_a_name_that_resolves_to_loopback_is_refused_when_sending(rt):
    """Forms a literal check cannot read as an address (decimal, short, hex) are caught at send time by DNS."""
    callbacks = Callbacks()
    with LoopbackServer(callbacks.app) as server:
        port = server.url.rsplit(":", 1)[1]
        for host in ("2130706433", "127.1", "0x7f.0.0.1", "017700000001"):
            url = f"http://{host}:{port}/x"
            assert check_callback(url, rt.settings) == url  # not an IP literal to the parser
            with pytest.raises(DeliveryFailed, match="public address"):
                await rt.channels["webhook"].send(_out(url))
        assert callbacks.received == []


async def test_a_name_that_rebinds_to_loopback_after_the_check_is_never_called(rt, monkeypatch):
    """DNS rebinding: the name answers a public address, then 127.0.0.1. We connect to the one we checked."""
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name != "rebind.example":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(name)
        address = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

    connected: list[str] = []
    real_connect = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self, host, port, *args, **kwargs):
        connected.append(host)
        if host == "93.184.216.34":  # the test machine has no route to the internet; say so at once
            raise httpcore.ConnectError("no route to the public address in this test")
        return await real_connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    callbacks = Callbacks()
    with LoopbackServer(callbacks.app) as server:
        port = server.url.rsplit(":", 1)[1]
        with pytest.raises(DeliveryFailed, match="cannot connect") as failed:
            await rt.channels["webhook"].send(_out(f"http://rebind.example:{port}/x"))
    assert failed.value.retryable  # the public address may answer later; loopback never gets the call
    assert callbacks.received == []
    assert lookups == ["rebind.example"] and connected == ["93.184.216.34"]


async def test_a_redirect_from_a_callback_is_not_followed(settings):
    # Private addresses allowed here only so that the loopback receiver is reachable at all.
    settings = settings.model_copy(update={"webhook_secret": SecretStr(WEBHOOK_SECRET), "callback_allow_private": True})
    callbacks = Callbacks()
    callbacks.script = {"/moved": [307]}
    async with running(settings, builtins=False, agents=[EchoAgent()], channels=[webhook_channel]) as rt:
        with LoopbackServer(callbacks.app) as server:
            assert rt.egress.follow_redirects is False
            with pytest.raises(DeliveryFailed, match="307"):
                await rt.channels["webhook"].send(_out(f"{server.url}/moved"))
    assert [m["path"] for m in callbacks.received] == ["/moved"]


async def test_end_to_end_a_loopback_callback_fails_the_thread_and_calls_nothing(redis_url, prefix, tmp_path):
    callbacks = Callbacks()
    with LoopbackServer(callbacks.app) as server:
        port = server.url.rsplit(":", 1)[1]
        async with stack(redis_url, prefix, tmp_path, callback_allow_private=False) as s, s.workers():
            r = await s.webhook("echo", {"text": "hi", "callback_url": f"http://127.1:{port}/steal"})
            assert r.status_code == 202
            thread_id = r.json()["thread_id"]
            await s.wait_status(thread_id, "failed")
            thread = await s.rt.store.load(thread_id)
            [failed] = [e for e in thread.events if e.type == "delivery"]
            assert failed.status == "failed" and "public address" in failed.detail
            r = await s.webhook("echo", {"text": "hi", "callback_url": "http://169.254.169.254/latest"})
            assert r.status_code == 400 and "private" in r.json()["detail"]
        assert callbacks.received == []


@pytest.mark.parametrize(
    "ref",
    [
        "http://169.254.169.254/latest/meta-data/",
        "{base}/2010-04-01/Accounts/ACother0000000000000000000000000/Messages/MM1/Media/ME1",
        "{base}/2010-04-01/Accounts/{sid}/../../admin",
        "{scheme}://{host}@evil.test/2010-04-01/Accounts/{sid}/Messages/MM1/Media/ME1",
        "{scheme}://{host}.evil.test/2010-04-01/Accounts/{sid}/Messages/MM1/Media/ME1",
        "{other_scheme}://{host}/2010-04-01/Accounts/{sid}/Messages/MM1/Media/ME1",
        "{scheme}://{host}:1/2010-04-01/Accounts/{sid}/Messages/MM1/Media/ME1",
        "file:///2010-04-01/Accounts/{sid}/Messages/MM1/Media/ME1",
    ],
)
def test_media_outside_our_account_on_the_api_origin_is_refused(settings, ref):
    settings = settings.model_copy(
        update={"twilio_account_sid": "AC" + "0" * 32, "twilio_api_url": "https://api.twilio.com"}
    )
    ref = ref.format(
        base="https://api.twilio.com",
        sid=settings.twilio_account_sid,
        scheme="https",
        host="api.twilio.com",
        other_scheme="http",
    )
    assert not allowed(ref, settings)
    assert allowed(
        f"https://api.twilio.com/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages/MM1/Media/ME1", settings
    )


async def test_media_refused_is_never_requested(redis_url, prefix, tmp_path):
    async with stack(redis_url, prefix, tmp_path) as s:
        sms = s.rt.channels["sms"]
        good = s.twilio.add_media(b"png", "image/png")
        for ref in (
            good.replace(s.twilio.url, "http://127.0.0.1:9"),
            good.replace("/Accounts/AC", "/Accounts/ACx"),
            "http://169.254.169.254/",
        ):
            with pytest.raises(Malformed):
                await sms.fetch_media(ref)
        assert s.twilio.calls == []
        assert (await sms.fetch_media(good)).content == b"png"
        await eventually(lambda: len(s.twilio.calls) == 1)
