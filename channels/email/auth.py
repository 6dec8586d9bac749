"""Who really sent a message: DKIM, DMARC alignment, and a trusted relay's Authentication-Results.

The From header is whatever the sender typed. A message counts as written by
its From address only when a check a mail server would make passes *for the
From domain* (DMARC's identifier alignment, RFC 7489 §3.1):

- a DKIM signature (RFC 6376) that verifies here, under a key published in DNS,
  whose d= is the From domain or, in relaxed mode, shares its organisational
  domain (the Public Suffix List's registrable domain); the signature must cover
  Message-ID too, so a signed approval cannot be re-sent under a new id past the
  Message-ID dedupe;
- or what the relay named by FRONTDESK_EMAIL_TRUSTED_AUTHSERV_ID reported in its
  Authentication-Results (RFC 8601): `dmarc=pass` for the From domain, or an
  aligned `dkim=pass` (header.d) or `spf=pass` (smtp.mailfrom).

SPF is left to that relay: it sees the connecting address of the sending
server, whereas frontdesk behind it sees only the relay. The _dmarc TXT record
decides strict or relaxed alignment (adkim=, aspf=; relaxed when absent).

A relay adds its Authentication-Results on top and is meant to delete any older
one carrying its own authserv-id (RFC 8601 §5). We do that deletion again at the
SMTP door (`strip`): only the topmost header with the trusted id is kept, and
only from a peer in FRONTDESK_EMAIL_TRUSTED_RELAYS when that is set; every other
one with that id is removed from the stored mail before anything reads it.

DNS goes through a `Resolver` (dnspython's by default), so tests bring their own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from channels.email.headers import header_block
from gateway.errors import ConfigError
from gateway.settings import Settings

if TYPE_CHECKING:
    import dkim

log = structlog.get_logger("frontdesk.email")
MAX_SIGNATURES = 5  # DKIM-Signature headers tried per message (a sender may stack several)
DNS_TIMEOUT = 5.0
OFF_LOOP = 512 * 1024  # larger messages are verified in a thread
RESULTS = b"authentication-results"
_COMMENT = re.compile(r"\([^()]*\)")


class TempError(Exception):
    """A DNS lookup failed for now (timeout, SERVFAIL): the check cannot say either way."""


class Resolver(Protocol):
    async def txt(self, name: str) -> list[str]:
        """The TXT records at `name`, each one's strings joined; [] when there are none. TempError on failure."""
        ...


class DnsResolver:
    """TXT lookups with dnspython's asyncio resolver (the system's name servers)."""

    def __init__(self) -> None:
        self._resolver: Any = None

    async def txt(self, name: str) -> list[str]:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        if self._resolver is None:
            self._resolver = dns.asyncresolver.Resolver()
            self._resolver.lifetime = DNS_TIMEOUT
        try:
            answer = await self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise TempError(f"{name}: {type(exc).__name__}") from None
        return [b"".join(record.strings).decode("ascii", "replace") for record in answer]


@dataclass
class Verdict:
    """Whether the From address is authenticated, and a one-line account of why (recorded on the thread)."""

    passed: bool
    detail: str
    via: str = ""  # "dkim" (verified here) or "relay" (its Authentication-Results)
    checks: list[str] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        return {"passed": self.passed, "via": self.via, "detail": self.detail}


@dataclass
class Result:
    """One resinfo of an Authentication-Results header: `dkim=pass header.d=example.com`."""

    method: str
    result: str
    props: dict[str, str]


# ---------------------------------------------------------------- Authentication-Results


def fields(block: bytes) -> list[bytes]:
    """The header fields of a header block, each with its continuation lines."""
    out: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] += line
        elif line.strip():
            out.append(line)
    return out


def field_name(raw_field: bytes) -> bytes:
    return raw_field.partition(b":")[0].strip().lower()


def field_value(raw_field: bytes) -> str:
    return " ".join(raw_field.partition(b":")[2].decode("utf-8", "replace").split())


def parse_results(value: str) -> tuple[str, list[Result]]:
    """(authserv-id, results) of an Authentication-Results value (RFC 8601 §2.2), comments dropped."""
    previous = None
    while previous != value:  # nested comments, innermost first
        previous, value = value, _COMMENT.sub(" ", value)
    parts = [p.strip() for p in value.split(";")]
    authserv = parts[0].split()[0].lower() if parts and parts[0].split() else ""
    results = []
    for part in parts[1:]:
        words = part.split()
        if not words or "=" not in words[0]:
            continue  # `none`, or something we cannot read
        method, _, result = words[0].partition("=")
        props = {}
        for word in words[1:]:
            key, eq, val = word.partition("=")
            if eq:
                props[key.lower()] = val.strip('"').lower()
        results.append(Result(method.split("/")[0].lower(), result.lower(), props))
    return authserv, results


def trusted_peers(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """FRONTDESK_EMAIL_TRUSTED_RELAYS as networks; a bad entry is a ConfigError naming it."""
    nets = []
    for item in settings.email_trusted_relays.split(","):
        if item.strip():
            try:
                nets.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"FRONTDESK_EMAIL_TRUSTED_RELAYS: {item.strip()!r} is not an IP address or network"
                ) from None
    return nets


# ---------------------------------------------------------------- DMARC alignment


@cache
def _suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # reads the list it ships (about 0.1 s), once per process


def org_domain(domain: str) -> str:
    """The organisational domain (RFC 7489 §3.2): the registrable part, by the Public Suffix List."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str, strict: bool) -> bool:
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return domain == from_domain or (not strict and org_domain(domain) == org_domain(from_domain))


def tags(record: str) -> dict[str, str]:
    """`v=DMARC1; p=reject; adkim=s` as a dict."""
    out = {}
    for part in record.split(";"):
        key, eq, val = part.partition("=")
        if eq:
            out[key.strip().lower()] = val.strip()
    return out


async def dmarc_record(resolver: Resolver, from_domain: str) -> dict[str, str] | None:
    """The DMARC record for the From domain, else its organisational domain's (RFC 7489 §6.6.3)."""
    for domain in dict.fromkeys([from_domain, org_domain(from_domain)]):
        for record in await resolver.txt(f"_dmarc.{domain}"):
            if record.replace(" ", "").lower().startswith("v=dmarc1"):
                return tags(record)
    return None


# ---------------------------------------------------------------- the checks


class Authenticator:
    """Strips forged Authentication-Results (SMTP path) and decides who wrote a message (worker)."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        self.authserv_id = (settings.email_trusted_authserv_id or "").strip().lower()
        self.peers = trusted_peers(settings)
        self.resolver: Resolver = resolver or DnsResolver()

    def strip(self, raw: bytes, peer: str) -> bytes:
        """`raw` with every Authentication-Results of the trusted id removed but the topmost from the relay."""
        if not self.authserv_id:
            return raw  # we believe none, so none needs removing: each is read as the sender's text
        block = header_block(raw)
        keep_first = self._from_relay(peer)
        kept, dropped = [], 0
        for f in fields(block):
            if field_name(f) == RESULTS and parse_results(field_value(f))[0] == self.authserv_id:
                if keep_first:
                    keep_first = False
                    kept.append(f)
                    continue
                dropped += 1
                continue
            kept.append(f)
        if not dropped:
            return raw
        log.warning("forged Authentication-Results removed", authserv_id=self.authserv_id, count=dropped, peer=peer)
        return b"".join(kept) + raw[len(block) :]

    def _from_relay(self, peer: str) -> bool:
        if not self.peers:
            return True
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.peers)

    async def verify(self, raw: bytes, sender: str) -> Verdict:
        """Whether `sender` (the From address) is authenticated for this message."""
        from_domain = sender.rpartition("@")[2].lower()
        if not from_domain:
            return Verdict(False, "no From domain to authenticate")
        checks: list[str] = []
        passes: list[tuple[str, str]] = []  # (method, domain) that passed; alignment decided below
        relay = self._relay_results(raw)
        for r in relay:
            if r.method == "dmarc" and r.result == "pass" and r.props.get("header.from") == from_domain:
                return Verdict(True, f"{self.authserv_id}: dmarc=pass header.from={from_domain}", "relay")
            signer = r.props.get("header.d") or r.props.get("header.i", "").rpartition("@")[2]
            if r.method == "dkim" and r.result == "pass" and signer:
                passes.append(("relay dkim", signer))
            elif r.method == "spf" and r.result == "pass" and r.props.get("smtp.mailfrom"):
                passes.append(("relay spf", r.props["smtp.mailfrom"].rpartition("@")[2]))
            checks.append(f"{self.authserv_id}: {r.method}={r.result}")
        for domain, ok, why in await self._dkim(raw):
            checks.append(f"dkim={'pass' if ok else 'fail'} d={domain}{f' ({why})' if why else ''}")
            if ok:
                passes.append(("dkim", domain))
        if not passes:
            return Verdict(
                False, "; ".join(checks) or "no DKIM signature and no trusted Authentication-Results", "", checks
            )
        policy: dict[str, str] | None = None
        for method, domain in passes:
            strict = False
            if domain != from_domain and org_domain(domain) == org_domain(from_domain):
                if policy is None:
                    try:
                        policy = await dmarc_record(self.resolver, from_domain) or {}
                    except TempError as exc:
                        checks.append(f"dmarc=temperror ({exc})")
                        continue
                strict = policy.get("aspf" if method == "relay spf" else "adkim", "r").lower() == "s"
            if aligned(domain, from_domain, strict):
                via = "dkim" if method == "dkim" else "relay"
                return Verdict(True, f"{method}=pass d={domain}, aligned with From {from_domain}", via, checks)
        found = ", ".join(sorted({d for _, d in passes}))
        failed = "".join(f"; {c}" for c in checks if c.startswith("dmarc=temperror"))
        return Verdict(False, f"passed only for {found}, not aligned with From {from_domain}{failed}", "", checks)

    def _relay_results(self, raw: bytes) -> list[Result]:
        """The trusted relay's results: after `strip`, the one header of its id left in the mail."""
        if not self.authserv_id:
            return []
        for f in fields(header_block(raw)):
            if field_name(f) == RESULTS:
                authserv, results = parse_results(field_value(f))
                if authserv == self.authserv_id:
                    return results
        return []

    async def _dkim(self, raw: bytes) -> list[tuple[str, bool, str]]:
        """(d=, verified, why not) per DKIM signature, the topmost MAX_SIGNATURES."""
        import dkim  # on the first signed message: dkimpy and dnspython cost a process ~3 MiB (benchmarks/NOTES.md)

        try:
            signer = dkim.DKIM(raw)
        except Exception as exc:  # dkimpy parses the whole message; an unreadable one has no signature to check
            return [("?", False, f"unreadable: {type(exc).__name__}")]
        count = sum(1 for name, _ in signer.headers if name.lower() == b"dkim-signature")
        off_loop = len(raw) > OFF_LOOP
        return [await self._one_signature(signer, idx, off_loop) for idx in range(min(count, MAX_SIGNATURES))]

    async def _one_signature(self, signer: dkim.DKIM, idx: int, off_loop: bool) -> tuple[str, bool, str]:
        # dkimpy raises more than DKIMException on a damaged signature (binascii.Error, IndexError,
        # found by tests/fuzz/test_mail_auth.py): any of them is a signature that does not verify.
        try:
            prep = signer.verify_headerprep(idx)
        except Exception as exc:
            return ("?", False, f"bad signature header: {type(exc).__name__}")
        if not prep:
            return ("?", False, "no signature")
        sig, signed_headers, _ = prep
        domain = sig[b"d"].decode("ascii", "replace").lower()
        name = f"{sig[b's'].decode('ascii', 'replace')}._domainkey.{domain}".lower()
        try:
            records = await self.resolver.txt(name)
        except TempError as exc:
            return (domain, False, f"temperror: {exc}")
        if not records:
            return (domain, False, f"no key at {name}")
        key = records[0].encode()

        def lookup(_name: bytes, timeout: float = DNS_TIMEOUT) -> bytes:
            return key  # fetched above: dkimpy's lookup is synchronous, ours is not

        import dkim

        try:
            # Hashing a large body holds the loop, as a full MIME parse would (inbound.THREAD_PARSE).
            ok = await asyncio.to_thread(signer.verify, idx, lookup) if off_loop else signer.verify(idx, dnsfunc=lookup)
        except dkim.DKIMException as exc:
            return (domain, False, str(exc).split(" (")[0][:120])
        except Exception as exc:
            return (domain, False, f"unreadable signature: {type(exc).__name__}")
        if not ok:
            return (domain, False, "signature does not verify")
        if b"message-id" not in signed_headers:
            return (domain, False, "Message-ID not signed: it could be replayed under a new id")
        return (domain, True, "")
