"""Client-certificate identity: parsing, validity, extended key usage, name rules, subject, roles."""

import datetime
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ringwall.tls import devca
from ringwall.tls.client_identity import (
    EXPIRED,
    MALFORMED,
    NO_ALLOW_MATCH,
    NO_SUBJECT_NAME,
    NOT_YET_VALID,
    NUL_IN_NAME,
    WRONG_USAGE,
    ClientCertificateRejected,
    IdentityPolicy,
    NameRule,
    check_client_certificate,
    identify,
    parse_client_certificate,
)
from tests.tls.certificates import (
    CLIENT_AUTH,
    NOW,
    SERVER_AUTH,
    dns,
    email,
    ip,
    make_certificate,
    uri,
)

SECOND = datetime.timedelta(seconds=1)
WILDCARD = NameRule.parse("dns", "*.clients.example.test")


def rejection_of(der: bytes, policy: IdentityPolicy, now: datetime.datetime = NOW) -> str:
    with pytest.raises(ClientCertificateRejected) as caught:
        identify(der, policy, now)
    return caught.value.reason


def allow(*rules: tuple[str, str]) -> IdentityPolicy:
    return IdentityPolicy(allow=tuple(NameRule.parse(kind, value) for kind, value in rules))


def test_parse_reads_every_field() -> None:
    names = [
        dns("App.Clients.example.test"),
        email("app@example.test"),
        uri("spiffe://e.test/a"),
        ip("2001:db8:0::1"),
    ]
    der = make_certificate(names, serial=0xBEEF)

    certificate = parse_client_certificate(der)

    assert certificate.subject == "CN=app,O=Example"
    assert certificate.issuer == "CN=Test client CA"
    assert certificate.dns == ("App.Clients.example.test",)
    assert certificate.email == ("app@example.test",)
    assert certificate.uri == ("spiffe://e.test/a",)
    assert certificate.ip == ("2001:db8::1",)
    assert certificate.serial == 0xBEEF
    assert certificate.not_before == NOW - datetime.timedelta(hours=1)
    assert certificate.not_after == NOW + datetime.timedelta(days=30)
    assert certificate.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert certificate.extended_key_usage == frozenset({CLIENT_AUTH.dotted_string})
    assert not certificate.has_nul_name


def test_parse_rejects_malformed_der() -> None:
    der = make_certificate()
    for broken in (b"", b"\x30\x03abc", der[:-10], der[:40]):
        with pytest.raises(ClientCertificateRejected) as caught:
            parse_client_certificate(broken)
        assert caught.value.reason == MALFORMED


def test_matching_certificate_accepted() -> None:
    policy = allow(("dns", "*.clients.example.test"))

    identity = identify(make_certificate(), policy, NOW)

    assert identity.subject == "cert:dns:app.clients.example.test"
    assert identity.certificate.dns == ("app.clients.example.test",)
    assert identity.roles == frozenset()


def test_empty_allow_accepts_any_certificate() -> None:
    identity = identify(make_certificate([uri("urn:example:any")]), IdentityPolicy(), NOW)

    assert identity.subject == "cert:uri:urn:example:any"


def test_expired_certificate_rejected() -> None:
    der = make_certificate(not_after=NOW - SECOND)

    assert rejection_of(der, IdentityPolicy()) == EXPIRED


def test_not_yet_valid_certificate_rejected() -> None:
    der = make_certificate(not_before=NOW + SECOND)

    assert rejection_of(der, IdentityPolicy()) == NOT_YET_VALID


def test_validity_bounds_inclusive() -> None:
    der = make_certificate(not_before=NOW, not_after=NOW + datetime.timedelta(minutes=5))
    policy = IdentityPolicy()

    identify(der, policy, NOW)
    identify(der, policy, NOW + datetime.timedelta(minutes=5))
    assert rejection_of(der, policy, NOW + datetime.timedelta(minutes=5) + SECOND) == EXPIRED
    assert rejection_of(der, policy, NOW - SECOND) == NOT_YET_VALID


def test_naive_time_raises() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        identify(make_certificate(), IdentityPolicy(), NOW.replace(tzinfo=None))


def test_server_auth_only_rejected() -> None:
    der = make_certificate(usages=[SERVER_AUTH])

    assert rejection_of(der, IdentityPolicy()) == WRONG_USAGE


def test_any_extended_key_usage_alone_rejected() -> None:
    der = make_certificate(usages=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])

    assert rejection_of(der, IdentityPolicy()) == WRONG_USAGE


def test_client_and_server_auth_accepted() -> None:
    der = make_certificate(usages=[SERVER_AUTH, CLIENT_AUTH])

    identify(der, IdentityPolicy(), NOW)


def test_missing_extended_key_usage_accepted() -> None:
    der = make_certificate(usages=None)

    assert parse_client_certificate(der).extended_key_usage is None
    identify(der, IdentityPolicy(), NOW)


def test_email_san_does_not_match_dns_rule() -> None:
    policy = allow(("dns", "app.clients.example.test"))
    for name in (email("app.clients.example.test"), email("app@app.clients.example.test")):
        assert rejection_of(make_certificate([name]), policy) == NO_ALLOW_MATCH


def test_uri_san_does_not_match_dns_rule() -> None:
    policy = allow(("dns", "app.clients.example.test"))
    der = make_certificate([uri("app.clients.example.test")])

    assert rejection_of(der, policy) == NO_ALLOW_MATCH


def test_dns_san_does_not_match_email_rule() -> None:
    policy = allow(("email", "app@example.test"))

    assert rejection_of(make_certificate([dns("app@example.test")]), policy) == NO_ALLOW_MATCH


def test_wildcard_covers_one_label() -> None:
    assert WILDCARD.matches("dns", "a.clients.example.test")
    assert WILDCARD.matches("dns", "a-1.clients.example.test")
    assert WILDCARD.matches("dns", "A.Clients.Example.TEST")


@pytest.mark.parametrize(
    "name",
    [
        "a.b.clients.example.test",
        "clients.example.test",
        ".clients.example.test",
        "*.clients.example.test",
        "a.clients.example.test.",
        "-a.clients.example.test",
        "a_b.clients.example.test",
        "aclients.example.test",
        "a.clients.example.test.evil.test",
    ],
)
def test_wildcard_rejects_other_names(name: str) -> None:
    assert not WILDCARD.matches("dns", name)


def test_wildcard_across_two_labels_rejected() -> None:
    policy = allow(("dns", "*.clients.example.test"))
    der = make_certificate([dns("a.b.clients.example.test")])

    assert rejection_of(der, policy) == NO_ALLOW_MATCH


def test_dns_rule_ignores_case() -> None:
    rule = NameRule.parse("dns", "App.Example.TEST")

    assert rule.value == "app.example.test"
    assert rule.matches("dns", "APP.example.test")


def test_non_ascii_name_never_folds_to_ascii() -> None:
    rule = NameRule.parse("dns", "kelvin.example.test")

    # U+212A KELVIN SIGN lowercases to "k".
    assert not rule.matches("dns", "\u212aelvin.example.test")


def test_email_and_uri_rules_exact() -> None:
    email_rule = NameRule.parse("email", "App@example.test")

    assert email_rule.matches("email", "App@example.test")
    assert not email_rule.matches("email", "app@example.test")


def test_uri_rules() -> None:
    policy = allow(("uri", "spiffe://example.test/payments"))

    identity = identify(make_certificate([uri("spiffe://example.test/payments")]), policy, NOW)

    assert identity.subject == "cert:uri:spiffe://example.test/payments"
    for other in (
        "spiffe://example.test/payments/extra",
        "spiffe://example.test/payments/",
        "spiffe://example.test/Payments",
        "SPIFFE://example.test/payments",
        "spiffe://example.test/pay",
    ):
        assert rejection_of(make_certificate([uri(other)]), policy) == NO_ALLOW_MATCH


def test_ip_rule_compares_addresses() -> None:
    rule = NameRule.parse("ip", "2001:DB8:0::1")

    assert rule.value == "2001:db8::1"
    identify(make_certificate([ip("2001:db8::1")]), allow(("ip", "2001:db8::1")), NOW)
    assert rejection_of(make_certificate([ip("10.0.0.1")]), allow(("ip", "10.0.0.2"))) == (
        NO_ALLOW_MATCH
    )


def test_subject_rule_matches_dn() -> None:
    policy = allow(("subject", "CN=app,O=Example"))

    identity = identify(make_certificate(), policy, NOW)

    # The rule matched the DN, so the subject is the first SAN.
    assert identity.subject == "cert:dns:app.clients.example.test"
    assert rejection_of(make_certificate(common_name="other"), policy) == NO_ALLOW_MATCH


@pytest.mark.parametrize(
    "der",
    [
        make_certificate([dns("app.clients.example.test\x00.evil.test")]),
        make_certificate([dns("ok.clients.example.test"), email("a@example.test\x00")]),
        make_certificate([uri("spiffe://example.test/a\x00b")]),
        make_certificate(common_name="app\x00.clients.example.test"),
    ],
    ids=["dns", "email", "uri", "subject"],
)
def test_nul_in_name_rejected(der: bytes) -> None:
    assert parse_client_certificate(der).has_nul_name
    assert rejection_of(der, IdentityPolicy()) == NUL_IN_NAME
    assert rejection_of(der, allow(("dns", "*.clients.example.test"))) == NUL_IN_NAME


def test_rule_never_matches_value_with_nul() -> None:
    assert not NameRule.parse("dns", "a.example.test").matches("dns", "a.example.test\x00")
    assert not NameRule.parse("uri", "urn:a").matches("uri", "urn:a\x00")
    assert not WILDCARD.matches("dns", "a\x00.clients.example.test")


def test_checks_run_in_order() -> None:
    # An expired certificate with serverAuth only reports the expiry first.
    der = make_certificate(usages=[SERVER_AUTH], not_after=NOW - SECOND)
    certificate = parse_client_certificate(der)

    with pytest.raises(ClientCertificateRejected) as caught:
        check_client_certificate(certificate, (), NOW)
    assert caught.value.reason == EXPIRED


def test_subject_from_matching_san() -> None:
    der = make_certificate([dns("first.example.test"), uri("spiffe://example.test/payments")])
    policy = allow(("uri", "spiffe://example.test/payments"))

    assert identify(der, policy, NOW).subject == "cert:uri:spiffe://example.test/payments"
    assert identify(der, IdentityPolicy(), NOW).subject == "cert:dns:first.example.test"


def test_subject_from_dn_and_fingerprint() -> None:
    der = make_certificate()

    by_dn = identify(der, IdentityPolicy(subject="dn"), NOW)
    by_fingerprint = identify(der, IdentityPolicy(subject="fingerprint"), NOW)

    assert by_dn.subject == "cert:dn:CN=app,O=Example"
    assert by_fingerprint.subject == f"cert:sha256:{hashlib.sha256(der).hexdigest()}"


def test_subject_needs_san_by_default() -> None:
    der = make_certificate([])

    assert rejection_of(der, IdentityPolicy()) == NO_SUBJECT_NAME
    assert identify(der, IdentityPolicy(subject="dn"), NOW).subject == "cert:dn:CN=app,O=Example"


def test_roles_and_scopes_granted_by_rules() -> None:
    policy = IdentityPolicy(
        roles={
            "internal": (NameRule.parse("dns", "*.clients.example.test"),),
            "admin": (NameRule.parse("dns", "admin.example.test"),),
            "named": (NameRule.parse("subject", "CN=app,O=Example"),),
        },
        scopes={"payments:write": (NameRule.parse("uri", "spiffe://example.test/payments"),)},
    )
    der = make_certificate([dns("app.clients.example.test"), uri("spiffe://example.test/payments")])

    identity = identify(der, policy, NOW)

    assert identity.roles == frozenset({"internal", "named"})
    assert identity.scopes == frozenset({"payments:write"})


def test_devca_demo_client_accepted() -> None:
    ca = devca.create_ca(NOW)
    client = devca.issue_leaf(ca, devca.CLIENT, NOW)
    der = client.certificate.public_bytes(serialization.Encoding.DER)
    policy = IdentityPolicy(
        allow=(NameRule.parse("dns", "demo-client.ringwall.localhost"),),
        roles={"internal": (NameRule.parse("dns", "demo-client.ringwall.localhost"),)},
    )

    identity = identify(der, policy, NOW)

    assert identity.subject == "cert:dns:demo-client.ringwall.localhost"
    assert identity.roles == frozenset({"internal"})
    assert identity.certificate.subject == "CN=demo-client,O=Ringwall development"


def test_devca_server_certificate_rejected() -> None:
    ca = devca.create_ca(NOW)
    server = devca.issue_leaf(ca, devca.SERVER, NOW)
    der = server.certificate.public_bytes(serialization.Encoding.DER)

    assert rejection_of(der, IdentityPolicy()) == WRONG_USAGE


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("dns", "a..example.test", "invalid name"),
        ("dns", "*", "invalid name"),
        ("dns", "*.", "invalid name"),
        ("dns", "a.*.example.test", "invalid name"),
        ("dns", "**.example.test", "invalid name"),
        ("dns", "caf\u00e9.example.test", "invalid name"),
        ("dns", "a.example.test\x00", "control character"),
        ("uri", "spiffe://a\r\nX-Evil: 1", "control character"),
        ("email", "no-at-sign", "invalid address"),
        ("uri", "no-scheme/path", "invalid URI"),
        ("ip", "10.0.0.300", "invalid IP address"),
        ("ip", "10.0.0.0/8", "invalid IP address"),
        ("subject", "", "non-empty"),
        ("cn", "app", "unknown name type"),
    ],
)
def test_rule_parse_rejects(kind: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NameRule.parse(kind, value)
