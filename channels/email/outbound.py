"""Outbound mail: the MIME message, and one delivery through the relay.

A reply threads in Gmail, Outlook and Apple Mail when it carries In-Reply-To
(the parent) and References (the chain, RFC 5322 §3.6.4) and keeps the subject
after "Re:". The Message-ID comes from the outbound id, so a re-sent message is
the same message to every receiver that deduplicates.

Both parts come from one parse of the Markdown (gateway.markdown): the text part
as plain text, the HTML part escaped, with links only to http, https and mailto,
and images as links (a remote image is a tracking pixel).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import aiosmtplib

from channels.email.headers import trim_references
from gateway.errors import DeliveryFailed
from gateway.markdown import literal, to_html, to_text
from gateway.messages import OutboundMessage
from gateway.settings import Settings

APPROVAL_HINT = "Reply APPROVE or DENY on the first line. Anything you write after it is passed on as your comment."


@dataclass
class Envelope:
    """Who a message is from and to, and how replies find their thread."""

    sender: str  # our address
    to: str
    reply_address: str  # our address with the reply token
    agent: str


def message_id(outbound_id: str, domain: str) -> str:
    return f"<{outbound_id}@{domain}>"


def compose(message: OutboundMessage, env: Envelope) -> EmailMessage:
    """The MIME message for `message`: a text part and an HTML alternative."""
    parent = message.reply_to.get("message_id")
    chain = [*message.reply_to.get("references", []), parent] if parent else []
    mail = EmailMessage()
    mail["From"] = Address(display_name=env.agent, addr_spec=env.sender)
    mail["To"] = env.to
    mail["Reply-To"] = env.reply_address
    mail["Subject"] = subject_for(message, env.agent)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = message_id(message.id, env.sender.partition("@")[2])
    if parent:
        mail["In-Reply-To"] = parent
        mail["References"] = " ".join(trim_references(chain))
    # RFC 3834 §5: "auto-replied" answers a message, "auto-generated" starts one; either
    # keeps a well-behaved autoresponder quiet. Exchange reads only its own header.
    mail["Auto-Submitted"] = "auto-replied" if parent else "auto-generated"
    mail["X-Auto-Response-Suppress"] = "All"
    markdown = body(message)
    mail.set_content(to_text(markdown) + "\n")
    mail.add_alternative(_page(to_html(markdown)), subtype="html")
    return mail


def subject_for(message: OutboundMessage, agent: str) -> str:
    theirs = " ".join((message.reply_to.get("subject") or "").split())
    if message.reply_to.get("message_id"):
        return theirs if theirs.lower().startswith("re:") else f"Re: {theirs}".rstrip()
    if message.subject:
        return " ".join(message.subject.split())
    return f"Approval needed by {agent}" if message.kind == "approval" else f"A question from {agent}"


def body(message: OutboundMessage) -> str:
    """The message as Markdown, with how to answer where an answer is wanted (our words taken literally)."""
    paragraphs = [message.text.strip()]
    if message.kind == "question" and message.choices:
        paragraphs.append("Reply with one of:\n" + "\n".join(f"- {literal(c)}" for c in message.choices))
    if message.kind == "approval" or message.actions:
        paragraphs.append(literal(APPROVAL_HINT))
    return "\n\n".join(paragraphs)


def _page(fragment: str) -> str:
    return f'<!DOCTYPE html><html><body><div style="font-family: sans-serif">{fragment}</div></body></html>\n'


# ---------------------------------------------------------------- the relay


class MailDrop:
    """`FRONTDESK_SMTP_RELAY=file:<dir>`: each mail written to `<dir>` as an .eml file.

    `frontdesk dev` uses it when no relay is set, so a local run shows what would have
    been sent instead of failing every mail thread. Never a default in production.
    """

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    async def send(self, mail: EmailMessage, env: Envelope) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(mail["Message-ID"]).strip("<>")) + ".eml"
        (self.directory / name).write_bytes(bytes(mail))


def relay_for(settings: Settings) -> Relay | MailDrop | None:
    relay = settings.smtp_relay
    if not relay:
        return None
    return MailDrop(relay.removeprefix("file:")) if relay.startswith("file:") else Relay(settings)


class Relay:
    """FRONTDESK_SMTP_RELAY, with its STARTTLS and AUTH settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        host, _, port = (settings.smtp_relay or "").rpartition(":")
        if not host or not port.isdigit():
            host, port = settings.smtp_relay or "", "25"
        self.host, self.port = host.strip("[]"), int(port)
        self.tls = (
            ssl.create_default_context(cafile=str(settings.smtp_relay_ca_file)) if settings.smtp_relay_ca_file else None
        )

    async def send(self, mail: EmailMessage, env: Envelope) -> None:
        """Hand `mail` to the relay; DeliveryFailed says whether trying again may help."""
        s = self.settings
        try:
            await aiosmtplib.send(
                mail,
                sender=env.sender,
                recipients=[env.to],
                hostname=self.host,
                port=self.port,
                username=s.smtp_relay_user,
                password=s.smtp_relay_password.get_secret_value() if s.smtp_relay_password else None,
                start_tls=s.smtp_relay_starttls,
                tls_context=self.tls,
                timeout=s.smtp_relay_timeout,
                local_hostname=s.email_domain,  # aiosmtplib's default asks DNS (getfqdn) per send
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            raise _by_code(
                first.code if first else 550, f"relay refused {env.to}: {first.message if first else exc}"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, f"relay said {exc.code} {exc.message}") from exc
        except aiosmtplib.SMTPConnectError as exc:  # nothing was sent (timeouts to connect included)
            raise DeliveryFailed(f"relay unreachable: {exc}", retryable=True) from exc
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected) as exc:
            # The relay may have the message; resending is safe (same Message-ID).
            raise DeliveryFailed(f"no answer from the relay: {exc}", ambiguous=True) from exc
        except aiosmtplib.SMTPException as exc:  # e.g. STARTTLS or AUTH required but not offered
            raise DeliveryFailed(f"relay: {exc}") from exc
        except ssl.SSLError as exc:
            raise DeliveryFailed(f"relay TLS: {exc}") from exc
        except OSError as exc:
            raise DeliveryFailed(f"relay connection: {exc}", retryable=True) from exc


def _by_code(code: int, text: str) -> DeliveryFailed:
    """4xx is "try later" (RFC 5321 §4.2.1); 5xx is final."""
    return DeliveryFailed(text[:500], status=code, retryable=not 500 <= code < 600)
