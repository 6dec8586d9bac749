"""DKIM for tests: keys made here, messages signed with dkimpy, and DNS answered from a dict."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.email.auth import TempError

SIGNED = [b"from", b"to", b"subject", b"date", b"message-id", b"in-reply-to", b"references"]


@dataclass
class Key:
    private: bytes  # PKCS#1 PEM, what dkimpy signs with
    record: str  # the TXT record publishing the public half


def new_key() -> Key:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Key(private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")


def sign(raw: bytes, domain: str, key: Key, *, selector: str = "s1", headers: list[bytes] = SIGNED) -> bytes:
    """`raw` (CRLF line ends) with a DKIM-Signature on top, as a sending server adds it."""
    present = [h for h in headers if h in raw.lower()]
    signature = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private,
        include_headers=present,
        canonicalize=(b"relaxed", b"simple"),
    )
    return signature + raw


@dataclass
class Dns:
    """TXT records by name; `failing` names answer with a temporary error. Every question is kept."""

    records: dict[str, list[str]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    def publish(self, domain: str, key: Key, selector: str = "s1") -> None:
        self.records[f"{selector}._domainkey.{domain}"] = [key.record]

    async def txt(self, name: str) -> list[str]:
        name = name.lower().rstrip(".")
        self.asked.append(name)
        if name in self.failing:
            raise TempError(f"{name}: timeout")
        return list(self.records.get(name, []))


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
