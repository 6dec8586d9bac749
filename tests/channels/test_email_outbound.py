"""Outbound mail: the MIME message, and delivery through a real aiosmtpd relay on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from email import policy
from email.parser import BytesParser

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from helpers import eventually, make_settings
from plugins import EchoAgent

import channels.email as email_channel
from channels.email import tokens
from channels.email.headers import MAX_REFERENCES, read_headers, trim_references
from channels.email.outbound import Envelope, compose
from gateway.errors import DeliveryFailed
from gateway.events import OutAction, OutboundMessage
from gateway.runtime import running

THREAD = "th_018f9a2b3c4d5e6f708192"
THEIRS = {
    "message_id": "<CAF3x9kQp2m@mail.gmail.com>",
    "references": ["<root@example.com>", "<th_018f9a2b3c4d5e6f708192-1@frontdesk.localhost>"],
    "subject": "Printer on the 4th floor",
    "to": "alice@example.com",
    "from": "echo@frontdesk.localhost",
}


class Relay:
    """A real SMTP server standing in for the relay: records what it accepts, or answers as told."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], object]] = []
        self.data_replies: list[str] = []  # answers to DATA, used before accepting
        self.rcpt_reply: str | None = None
        self.hold: asyncio.Event | None = None  # DATA waits for it: a relay that never answers
        self.logins: list[bytes] = []
        self.port = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.hold is not None:
            await self.hold.wait()
        if self.data_replies:
            return self.data_replies.pop(0)
        parsed = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 2.0.0 queued as 4711"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword) and auth_data.login == b"frontdesk" and auth_data.password == b"s3cret"
        )
        if ok:
            self.logins.append(auth_data.login)
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535 itself


@contextlib.asynccontextmanager
async def relay(**smtp_kw):
    sink = Relay()
    loop = asyncio.get_running_loop()
    if smtp_kw.pop("auth", False):
        smtp_kw.update(auth_required=True, authenticator=sink.authenticate)
    sessions: list[SMTP] = []

    def session() -> SMTP:
        sessions.append(SMTP(sink, hostname="relay.test", loop=loop, **smtp_kw))
        return sessions[-1]

    server = await loop.create_server(session, "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        if sink.hold is not None:
            sink.hold.set()
        server.close()
        await server.wait_closed()
        # On Python 3.11 wait_closed does not wait for open connections. Each ends once its client
        # has closed (a client that timed out closes its socket a moment later): wait for that, so
        # nothing of the test outlives its event loop.
        await eventually(lambda: all(s.transport is None for s in sessions))


@contextlib.asynccontextmanager
async def email(redis_url, prefix, port: int | None, **overrides):
    relay_at = f"127.0.0.1:{port}" if port else None
    settings = make_settings(redis_url, prefix, smtp_relay=relay_at, email_token_secret="test-secret", **overrides)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel]) as rt:
        yield rt.channels["email"]


def outbound(**kw) -> OutboundMessage:
    values = dict(
        id=f"{THREAD}-3",
        thread_id=THREAD,
        channel="email",
        address="alice@example.com",
        reply_to=THEIRS,
        text="Which printer?",
        kind="question",
    )
    values.update(kw)
    return OutboundMessage(**values)


ENV = Envelope(
    sender="echo@frontdesk.localhost",
    to="alice@example.com",
    reply_address="echo+tok@frontdesk.localhost",
    agent="echo",
)


# ---------------------------------------------------------------- composing


def test_a_reply_threads_in_common_clients():
    mail = compose(outbound(), ENV)
    assert mail["Message-ID"] == f"<{THREAD}-3@frontdesk.localhost>"
    assert mail["In-Reply-To"] == THEIRS["message_id"]
    assert mail["References"].split() == [*THEIRS["references"], THEIRS["message_id"]]
    assert mail["Subject"] == "Re: Printer on the 4th floor"
    assert mail["From"].addresses[0].addr_spec == "echo@frontdesk.localhost"
    assert mail["Reply-To"] == "echo+tok@frontdesk.localhost"
    assert mail["To"] == "alice@example.com"
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail.get_body(("plain",)).get_content().strip() == "Which printer?"
    assert "Which printer?" in mail.get_body(("html",)).get_content()


def test_a_long_chain_keeps_its_root_and_newest_the_way_inbound_reads_it():
    chain = [f"<m{i}@example.com>" for i in range(60)]
    mail = compose(
        outbound(reply_to={**THEIRS, "references": [*chain, chain[5]], "message_id": "<last@example.com>"}), ENV
    )
    sent = mail["References"].split()
    assert len(sent) == MAX_REFERENCES and sent[0] == chain[0] and sent[-1] == "<last@example.com>"
    assert sent == trim_references([*chain, "<last@example.com>"])  # one rule, both directions
    assert read_headers(mail.as_bytes()).references == sent


def test_the_same_outbound_id_gives_the_same_message_id():
    assert compose(outbound(), ENV)["Message-ID"] == compose(outbound(attempt=3), ENV)["Message-ID"]


def test_re_is_not_doubled():
    mail = compose(outbound(reply_to={**THEIRS, "subject": "RE: Printer"}), ENV)
    assert mail["Subject"] == "RE: Printer"


def test_a_new_thread_has_a_subject_and_no_parent():
    mail = compose(outbound(reply_to={}), ENV)
    assert mail["Subject"] == "A question from echo"
    assert mail["In-Reply-To"] is None and mail["References"] is None
    assert mail["Auto-Submitted"] == "auto-generated"
    assert compose(outbound(reply_to={}, subject="Your laptop\r\nBcc: x@y"), ENV)["Subject"] == "Your laptop Bcc: x@y"


def test_an_approval_says_how_to_answer():
    actions = [
        OutAction(call_id="c1", label="Approve", approved=True),
        OutAction(call_id="c1", label="Deny", approved=False),
    ]
    mail = compose(outbound(kind="approval", text="Approval needed: deploy(version='1.2')", actions=actions), ENV)
    text = mail.get_body(("plain",)).get_content()
    assert text.startswith("Approval needed: deploy(version='1.2')")
    assert "Reply APPROVE or DENY on the first line" in text
    assert "APPROVE or DENY" in mail.get_body(("html",)).get_content()


def test_a_question_lists_its_choices():
    text = compose(outbound(choices=["3rd floor", "4th floor"]), ENV).get_body(("plain",)).get_content()
    assert "Reply with one of:\n- 3rd floor\n- 4th floor" in text


def test_html_is_escaped():
    html = compose(outbound(text="<script>x</script> & more"), ENV).get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


def _parts(text: str) -> tuple[str, str]:
    """(text part, the HTML part's body fragment) of the mail for `text`."""
    mail = compose(outbound(text=text, kind="final"), ENV)
    page = mail.get_body(("html",)).get_content()
    fragment = page.split('<div style="font-family: sans-serif">', 1)[1].rsplit("</div></body></html>", 1)[0]
    return mail.get_body(("plain",)).get_content().rstrip("\n"), fragment.strip()


# Markdown -> (text part, HTML fragment): one parse, both parts; raw HTML and unsafe links stay text.
MAIL = [
    ("**b** _i_ ~~s~~ `c<d`", "b i s c<d", "<p><strong>b</strong> <em>i</em> <s>s</s> <code>c&lt;d</code></p>"),
    (
        "[doc](https://x.test/?a=1&b=2)",
        "doc (https://x.test/?a=1&b=2)",
        '<p><a href="https://x.test/?a=1&amp;b=2">doc</a></p>',
    ),
    ("<a@x.test>", "a@x.test", '<p><a href="mailto:a@x.test">a@x.test</a></p>'),
    ("# Title\n- one\n- two", "Title\n- one\n- two", "<h1>Title</h1>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>"),
    ("line one\nline two", "line one\nline two", "<p>line one<br />\nline two</p>"),
    ("```js\nif (a < b) {}\n```", "if (a < b) {}", '<pre><code class="language-js">if (a &lt; b) {}\n</code></pre>'),
    # An image is a link: a remote image in a mail would load (a tracking pixel).
    (
        "![pixel](https://t.test/p.gif)",
        "pixel (https://t.test/p.gif)",
        '<p><a href="https://t.test/p.gif">pixel</a></p>',
    ),
    # Hostile input.
    ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
    ("<div>\n**x**\n</div>", "<div>\nx\n</div>", "<p>&lt;div&gt;<br />\n<strong>x</strong><br />\n&lt;/div&gt;</p>"),
    ("[x](javascript:alert(1))", "[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
    ("[x](JaVaScRiPt:alert(1))", "[x](JaVaScRiPt:alert(1))", "<p>[x](JaVaScRiPt:alert(1))</p>"),
    ("[x](vbscript:msgbox)", "[x](vbscript:msgbox)", "<p>[x](vbscript:msgbox)</p>"),
    ("![x](data:image/png;base64,AAAA)", "![x](data:image/png;base64,AAAA)", "<p>![x](data:image/png;base64,AAAA)</p>"),
    (
        '[x](https://x.test/"onmouseover="a)',
        "x (https://x.test/%22onmouseover=%22a)",
        '<p><a href="https://x.test/%22onmouseover=%22a">x</a></p>',
    ),
    ("**open `code *nest _deep", "**open `code *nest _deep", "<p>**open `code *nest _deep</p>"),
]


@pytest.mark.parametrize("markdown, text, html", MAIL, ids=[m[:30] for m, _, _ in MAIL])
def test_markdown_as_mail_parts(markdown, text, html):
    assert _parts(markdown) == (text, html)


def test_very_long_hostile_markdown_keeps_its_text_in_both_parts():
    md = "> " * 50 + "<script>deep</script>\n" + "[" * 4000 + "**y " * 4000
    text, html = _parts(md)
    assert "<script>deep</script>" in text and text.count("y") == 4000
    assert "<script" not in html and "&lt;script&gt;deep" in html and html.count("y") == 4000


# ---------------------------------------------------------------- sending


async def test_send_through_the_relay(redis_url, prefix):
    async with relay() as sink, email(redis_url, prefix, sink.port) as channel:
        sent = await channel.send(outbound())
    [(mail_from, rcpts, mail)] = sink.received
    assert mail_from == "echo@frontdesk.localhost" and rcpts == ["alice@example.com"]
    assert mail["Message-ID"] == sent.detail == sent.conversation == f"<{THREAD}-3@frontdesk.localhost>"
    # The Reply-To carries a genuine token for the thread.
    base, token = tokens.split(mail["Reply-To"])
    assert base == "echo@frontdesk.localhost" and tokens.verify(b"test-secret", token) == THREAD
    assert sent.reply_to == {
        "message_id": sent.detail,
        "references": [*THEIRS["references"], THEIRS["message_id"]],
        "subject": "Re: Printer on the 4th floor",
        "to": "alice@example.com",
        "from": "echo@frontdesk.localhost",
    }


async def test_a_new_thread_goes_from_the_agents_address(redis_url, prefix):
    async with relay() as sink, email(redis_url, prefix, sink.port, default_agent="echo") as channel:
        sent = await channel.send(outbound(reply_to={}, address="bob@example.com"))
    [(mail_from, rcpts, mail)] = sink.received
    assert mail_from == "echo@frontdesk.localhost" and rcpts == ["bob@example.com"]
    assert mail["Subject"] == "A question from echo"
    assert sent.conversation == mail["Message-ID"]


@pytest.mark.parametrize(
    "reply, retryable", [("451 4.3.0 try later", True), ("421 4.7.0 busy", True), ("554 5.7.1 rejected as spam", False)]
)
async def test_relay_answers_to_data_decide_retry(redis_url, prefix, reply, retryable):
    async with relay() as sink, email(redis_url, prefix, sink.port) as channel:
        sink.data_replies.append(reply)
        with pytest.raises(DeliveryFailed) as failed:
            await channel.send(outbound())
    assert failed.value.retryable is retryable and not failed.value.ambiguous
    assert failed.value.status == int(reply[:3])


async def test_a_refused_recipient_is_permanent(redis_url, prefix):
    async with relay() as sink, email(redis_url, prefix, sink.port) as channel:
        sink.rcpt_reply = "550 5.1.1 no such user"
        with pytest.raises(DeliveryFailed) as failed:
            await channel.send(outbound())
    assert failed.value.status == 550 and not failed.value.retryable


async def test_an_unreachable_relay_is_retryable(redis_url, prefix):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        async with email(redis_url, prefix, port) as channel:
            with pytest.raises(DeliveryFailed) as failed:
                await channel.send(outbound())
    assert failed.value.retryable and not failed.value.ambiguous


async def test_a_relay_that_never_answers_is_ambiguous(redis_url, prefix):
    async with relay() as sink, email(redis_url, prefix, sink.port, smtp_relay_timeout=0.5) as channel:
        sink.hold = asyncio.Event()
        with pytest.raises(DeliveryFailed) as failed:
            await channel.send(outbound())
    assert failed.value.ambiguous
    assert channel.resend_safe  # so the outbox sends it again, under the same Message-ID


async def test_no_relay_configured_is_a_permanent_failure(redis_url, prefix):
    async with email(redis_url, prefix, None) as channel:
        with pytest.raises(DeliveryFailed) as failed:
            await channel.send(outbound())
    assert not failed.value.retryable and "FRONTDESK_SMTP_RELAY" in str(failed.value)


async def test_a_file_relay_writes_each_mail_as_an_eml_file(redis_url, prefix, tmp_path):
    """`frontdesk dev` with no relay: the mail lands in a folder, threaded like the real one."""
    settings = make_settings(redis_url, prefix, smtp_relay=f"file:{tmp_path / 'sent'}", email_token_secret="s")
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel]) as rt:
        sent = await rt.channels["email"].send(outbound())
    [path] = list((tmp_path / "sent").iterdir())
    mail = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert mail["Message-ID"] == sent.detail and mail["In-Reply-To"] == THEIRS["message_id"]
    assert mail.get_body(("plain",)).get_content().strip() == "Which printer?"


async def test_a_contact_that_is_not_an_address_is_permanent(redis_url, prefix):
    async with relay() as sink, email(redis_url, prefix, sink.port) as channel:
        with pytest.raises(DeliveryFailed) as failed:
            await channel.send(outbound(reply_to={}, address="not-an-address"))
    assert not failed.value.retryable
    assert sink.received == []


async def test_starttls_and_auth_to_the_relay(redis_url, prefix, tmp_path):
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    async with relay(tls_context=server_tls, require_starttls=True, auth=True) as sink:
        async with email(
            redis_url,
            prefix,
            sink.port,
            smtp_relay_starttls=True,
            smtp_relay_user="frontdesk",
            smtp_relay_password="s3cret",
            smtp_relay_ca_file=ca_file,
        ) as channel:
            await channel.send(outbound())
        assert sink.logins == [b"frontdesk"] and len(sink.received) == 1
        async with email(
            redis_url,
            prefix,
            sink.port,
            smtp_relay_starttls=True,
            smtp_relay_user="frontdesk",
            smtp_relay_password="wrong",
            smtp_relay_ca_file=ca_file,
        ) as channel:
            with pytest.raises(DeliveryFailed) as failed:
                await channel.send(outbound())
        assert failed.value.status == 535 and not failed.value.retryable


async def test_the_token_secret_is_shared_through_redis_when_unset(redis_url, prefix):
    settings = make_settings(redis_url, prefix)
    async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel]) as a:
        async with running(settings, agents=[EchoAgent()], builtins=False, channels=[email_channel.channel]) as b:
            key_a = await a.channels["email"].token_key()
            assert key_a == await b.channels["email"].token_key()
            assert len(key_a) == 64
