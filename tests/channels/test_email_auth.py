"""channels/email/auth.py on real DKIM-signed bytes: keys made here, DNS answered from a dict."""

from __future__ import annotations

import pytest
from dkimkit import Dns, crlf, new_key, sign
from helpers import make_settings

from channels.email.auth import Authenticator, aligned, org_domain, parse_results
from gateway.errors import ConfigError

MAIL = (
    "From: Alice <alice@{domain}>\nTo: approver@frontdesk.localhost\nSubject: Re: Deploy\n"
    "Message-ID: <a1@example.com>\nDate: Mon, 3 Jun 2024 10:00:00 +0000\n\nAPPROVE\n"
)


@pytest.fixture(scope="module")
def key():
    return new_key()


def mail(domain: str = "example.com") -> bytes:
    return crlf(MAIL.format(domain=domain))


def checker(dns: Dns, **settings) -> Authenticator:
    return Authenticator(make_settings(None, "t", **settings), dns)


async def test_a_signed_message_is_authenticated_for_its_domain(key):
    dns = Dns()
    dns.publish("example.com", key)
    verdict = await checker(dns).verify(sign(mail(), "example.com", key), "alice@example.com")
    assert verdict.passed and verdict.via == "dkim"
    assert verdict.as_data() == {"passed": True, "via": "dkim", "detail": verdict.detail}
    assert dns.asked == ["s1._domainkey.example.com"]  # no DMARC lookup needed: d= is the From domain


async def test_a_body_changed_after_signing_fails(key):
    dns = Dns()
    dns.publish("example.com", key)
    signed = sign(mail(), "example.com", key)
    verdict = await checker(dns).verify(signed.replace(b"APPROVE", b"DENY   "), "alice@example.com")
    assert not verdict.passed and "dkim=fail d=example.com (body hash mismatch" in verdict.detail


async def test_a_signature_by_another_key_fails(key):
    dns = Dns()
    dns.publish("example.com", new_key())  # the domain's real key; the sender signed with one of their own
    verdict = await checker(dns).verify(sign(mail(), "example.com", key), "alice@example.com")
    assert not verdict.passed and "signature does not verify" in verdict.detail


async def test_a_look_alike_from_domain_is_not_aligned_with_the_signature(key):
    dns = Dns()
    dns.publish("example.com", key)
    signed = sign(mail("exa1mple.com"), "example.com", key)  # a valid signature, for another domain
    verdict = await checker(dns).verify(signed, "alice@exa1mple.com")
    assert not verdict.passed and verdict.detail == "passed only for example.com, not aligned with From exa1mple.com"


async def test_relaxed_alignment_by_default_strict_when_the_dmarc_record_says_so(key):
    dns = Dns()
    dns.publish("example.com", key)
    signed = sign(mail("eu.example.com"), "example.com", key)
    assert (await checker(dns).verify(signed, "alice@eu.example.com")).passed  # no record: relaxed
    assert dns.asked[-2:] == ["_dmarc.eu.example.com", "_dmarc.example.com"]  # then the organisational domain
    dns.records["_dmarc.example.com"] = ["v=DMARC1; p=reject; adkim=s"]
    verdict = await checker(dns).verify(signed, "alice@eu.example.com")
    assert not verdict.passed and "not aligned" in verdict.detail
    dns.failing.add("_dmarc.eu.example.com")
    verdict = await checker(dns).verify(signed, "alice@eu.example.com")  # the mode unknown: not a pass
    assert not verdict.passed and verdict.detail.endswith("dmarc=temperror (_dmarc.eu.example.com: timeout)")


async def test_a_signature_that_leaves_out_the_message_id_does_not_count(key):
    dns = Dns()
    dns.publish("example.com", key)
    signed = sign(mail(), "example.com", key, headers=[b"from", b"to", b"subject"])
    verdict = await checker(dns).verify(signed, "alice@example.com")
    assert not verdict.passed and "Message-ID not signed" in verdict.detail


async def test_no_key_or_a_dns_failure_is_not_a_pass(key):
    signed = sign(mail(), "example.com", key)
    assert "no key at s1._domainkey.example.com" in (await checker(Dns()).verify(signed, "alice@example.com")).detail
    failing = Dns(failing={"s1._domainkey.example.com"})
    verdict = await checker(failing).verify(signed, "alice@example.com")
    assert not verdict.passed and "temperror" in verdict.detail


async def test_unsigned_and_unparseable_mail_is_not_authenticated():
    assert not (await checker(Dns()).verify(mail(), "alice@example.com")).passed
    assert not (await checker(Dns()).verify(b"\x00garbage", "alice@example.com")).passed
    assert not (await checker(Dns()).verify(mail(), "")).passed


FORGED = (
    "Authentication-Results: mx.example.com; dmarc=fail header.from=example.com\n"
    "Received: from somewhere\n"
    "Authentication-Results: mx.example.com;\n dmarc=pass (forged) header.from=example.com\n"
)


def test_strip_keeps_only_the_topmost_header_of_the_trusted_id():
    auth = checker(Dns(), email_trusted_authserv_id="MX.example.com")
    raw = crlf(FORGED) + mail()
    stripped = auth.strip(raw, "127.0.0.1")
    assert stripped == crlf(FORGED.split("Authentication-Results: mx.example.com;\n")[0]) + mail()
    assert auth.strip(mail(), "127.0.0.1") == mail()  # nothing to remove: the same bytes


def test_strip_removes_every_one_from_a_peer_that_is_not_the_relay():
    auth = checker(Dns(), email_trusted_authserv_id="mx.example.com", email_trusted_relays="10.0.0.0/8, 192.0.2.7")
    raw = crlf(FORGED) + mail()
    assert auth.strip(raw, "127.0.0.1") == crlf("Received: from somewhere\n") + mail()
    assert auth.strip(raw, "192.0.2.7").count(b"Authentication-Results") == 1
    assert auth.strip(raw, "not-an-ip").count(b"Authentication-Results") == 0


async def test_the_relays_results_count_only_when_its_id_is_configured():
    raw = crlf("Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\n") + mail()
    assert not (await checker(Dns()).verify(raw, "alice@example.com")).passed  # we believe no relay
    trusting = checker(Dns(), email_trusted_authserv_id="mx.example.com")
    verdict = await trusting.verify(trusting.strip(raw, "127.0.0.1"), "alice@example.com")
    assert verdict.passed and verdict.via == "relay"
    other_domain = await trusting.verify(raw, "alice@exa1mple.com")  # a pass for example.com is not for exa1mple
    assert not other_domain.passed


async def test_the_relays_dkim_and_spf_passes_are_aligned_here():
    trusting = checker(Dns(), email_trusted_authserv_id="mx.example.com")
    spf = crlf("Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=bounce@mail.example.com\n") + mail()
    assert (await trusting.verify(spf, "alice@example.com")).passed
    dkim = crlf("Authentication-Results: mx.example.com; dkim=pass header.d=example.org\n") + mail()
    assert not (await trusting.verify(dkim, "alice@example.com")).passed
    by_identity = crlf("Authentication-Results: mx.example.com; dkim=pass header.i=@mail.example.com\n") + mail()
    assert (await trusting.verify(by_identity, "alice@example.com")).passed  # relaxed: same organisation


def test_authentication_results_are_read_as_rfc_8601_writes_them():
    authserv, results = parse_results(
        'mx.example.com 1; (a (nested) comment) dkim=pass (good sig) header.d=Example.COM header.s="s1";'
        " spf=softfail smtp.mailfrom=x@y.example; none"
    )
    assert authserv == "mx.example.com"
    assert [(r.method, r.result, r.props) for r in results] == [
        ("dkim", "pass", {"header.d": "example.com", "header.s": "s1"}),
        ("spf", "softfail", {"smtp.mailfrom": "x@y.example"}),
    ]


def test_organisational_domains_follow_the_public_suffix_list():
    assert org_domain("mail.example.co.uk") == "example.co.uk"
    assert aligned("mail.example.co.uk", "example.co.uk", strict=False)
    assert not aligned("mail.example.co.uk", "example.co.uk", strict=True)
    assert not aligned("a.co.uk", "b.co.uk", strict=False)  # a public suffix is no one's organisation


def test_a_bad_relay_address_stops_start_up_naming_the_setting():
    with pytest.raises(ConfigError, match="FRONTDESK_EMAIL_TRUSTED_RELAYS: 'mx.example.com'"):
        checker(Dns(), email_trusted_relays="10.0.0.1,mx.example.com")


async def test_a_large_message_is_verified_off_the_loop_with_the_same_answer(key):
    dns = Dns()
    dns.publish("example.com", key)
    big = mail() + (b"y" * 998 + b"\r\n") * 700  # about 700 KB of body, over auth.OFF_LOOP
    signed = sign(big, "example.com", key)
    assert (await checker(dns).verify(signed, "alice@example.com")).passed
    assert not (await checker(dns).verify(signed[:-3] + b"z\r\n", "alice@example.com")).passed
