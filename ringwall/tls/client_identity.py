"""Client-certificate identity: parse a verified client certificate and apply the mTLS policy.

The TLS handshake has already verified the certificate chain against the
listener's CA bundle. This module decides, per request, whether that
certificate may call a route and who it names:

1. `parse_client_certificate` reads the DER into a `ClientCertificate`.
2. `check_client_certificate` rejects a certificate that is outside its
   validity period at `now`, has an extended key usage (EKU) without
   clientAuth, has a name with a NUL byte, or matches no allow rule.
3. `identify` does both and derives the caller's subject, roles and scopes.

A certificate without the EKU extension is accepted. RFC 5280 (section
4.2.1.12) allows any use then. This is also the decision of the `ssl_client`
purpose that OpenSSL 3 (`check_purpose_ssl_client` in crypto/x509/v3_purp.c)
and BoringSSL (selected in ssl/ssl_x509.cc) apply when a TLS server verifies
a client, and nginx and Envoy verify client certificates through those
libraries. As in OpenSSL, anyExtendedKeyUsage alone does not count as
clientAuth.

Every rejection raises `ClientCertificateRejected`, whose reason is one of
this module's fixed texts, so it is safe to log and to send to the client.
No function here does I/O. The current time is always an argument.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, cast, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from ringwall.errors import RingwallError

__all__ = [
    "EXPIRED",
    "MALFORMED",
    "NOT_YET_VALID",
    "NO_ALLOW_MATCH",
    "NO_SUBJECT_NAME",
    "NUL_IN_NAME",
    "WRONG_USAGE",
    "ClientCertificate",
    "ClientCertificateRejected",
    "ClientIdentity",
    "IdentityPolicy",
    "NameKind",
    "NameRule",
    "SanKind",
    "SubjectSource",
    "check_client_certificate",
    "check_validity",
    "identify",
    "parse_client_certificate",
]

# The reasons of ClientCertificateRejected.
MALFORMED = "the client certificate cannot be parsed"
EXPIRED = "the client certificate has expired"
NOT_YET_VALID = "the client certificate is not valid yet"
WRONG_USAGE = "the client certificate's extended key usage does not include clientAuth"
NUL_IN_NAME = "the client certificate has a name that contains a NUL byte"
NO_ALLOW_MATCH = "the client certificate matches no allow rule"
NO_SUBJECT_NAME = "the client certificate has no subject alternative name to name the caller"

SanKind = Literal["dns", "email", "uri", "ip"]
NameKind = Literal["dns", "email", "uri", "ip", "subject"]
# The source of the caller's subject: a SAN, the subject DN, or the
# certificate's SHA-256 fingerprint.
SubjectSource = Literal["san", "dn", "fingerprint"]

NAME_KINDS: tuple[NameKind, ...] = get_args(NameKind)

_SAN_TYPES: tuple[tuple[type[x509.GeneralName], SanKind], ...] = (
    (x509.DNSName, "dns"),
    (x509.RFC822Name, "email"),
    (x509.UniformResourceIdentifier, "uri"),
    (x509.IPAddress, "ip"),
)
# One DNS label: letters, digits and inner hyphens (RFC 1035, section 2.3.1,
# with leading digits allowed by RFC 1123), at most 63 characters.
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class ClientCertificateRejected(RingwallError):
    """A client certificate that does not authenticate the request.

    `reason` is one of this module's reason constants, so it is safe to log
    and to send to the client.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The fields of a client's leaf certificate that the mTLS policy reads.

    `names` are the DNS, email (rfc822Name), URI and IP address SANs in
    certificate order. Other SAN types are left out. `subject` and `issuer`
    are RFC 4514 strings, as `openssl x509 -nameopt RFC2253` prints them.
    `extended_key_usage` contains dotted OIDs, or is None when the certificate
    has no EKU extension.
    """

    subject: str
    issuer: str
    names: tuple[tuple[SanKind, str], ...]
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint_sha256: str
    extended_key_usage: frozenset[str] | None
    # Whether a SAN or a subject attribute value contains a NUL byte.
    has_nul_name: bool = False

    def san(self, kind: SanKind) -> tuple[str, ...]:
        """Return the SAN values of one type, in certificate order."""
        return tuple(value for name_kind, value in self.names if name_kind == kind)

    @property
    def dns(self) -> tuple[str, ...]:
        return self.san("dns")

    @property
    def email(self) -> tuple[str, ...]:
        return self.san("email")

    @property
    def uri(self) -> tuple[str, ...]:
        return self.san("uri")

    @property
    def ip(self) -> tuple[str, ...]:
        return self.san("ip")


@dataclass(frozen=True, slots=True)
class NameRule:
    """One accepted certificate name: a SAN of one type, or the subject DN, with its value.

    A `dns` value is an exact name or `*.` followed by a name. The wildcard
    covers exactly one whole label, so `*.clients.example.test` matches
    `a.clients.example.test` but neither `a.b.clients.example.test` nor
    `clients.example.test`. DNS names are compared without regard to ASCII
    case, and every other kind exactly. A rule matches only a name of its own
    kind, so a `dns` rule never matches an email or URI SAN.
    """

    kind: NameKind
    value: str

    @classmethod
    def parse(cls, kind: str, value: str) -> NameRule:
        """Check and normalize a rule from configuration, or raise ValueError."""
        if kind not in NAME_KINDS:
            raise ValueError(f"unknown name type {kind!r}: expected one of {', '.join(NAME_KINDS)}")
        if not value:
            raise ValueError(f"{kind}: expected a non-empty value")
        if any(ch < " " or ch == "\x7f" for ch in value):
            raise ValueError(f"{kind}: the value contains a control character such as NUL or LF")
        if kind == "dns":
            return cls("dns", _normalize_dns_rule(value))
        if kind == "email" and ("@" not in value or " " in value):
            raise ValueError(f"email: invalid address {value!r}: expected a form such as a@b.test")
        if kind == "uri" and (not _URI_SCHEME.match(value) or " " in value):
            raise ValueError(
                f"uri: invalid URI {value!r}: expected a scheme, as in spiffe://example.test/app"
            )
        if kind == "ip":
            try:
                return cls("ip", str(ipaddress.ip_address(value)))
            except ValueError:
                raise ValueError(f"ip: invalid IP address {value!r}") from None
        return cls(cast(NameKind, kind), value)

    def matches(self, kind: NameKind, value: str) -> bool:
        """Return whether a certificate name of type `kind` satisfies this rule."""
        if kind != self.kind or "\x00" in value:
            return False
        if kind != "dns":
            return value == self.value
        # Only ASCII is folded: str.lower() maps some non-ASCII letters to
        # ASCII ones (U+212A KELVIN SIGN to "k"), which would let a different
        # name match.
        if not value.isascii():
            return False
        name = value.lower()
        if not self.value.startswith("*."):
            return name == self.value
        label, dot, rest = name.partition(".")
        return bool(dot) and rest == self.value[2:] and bool(_DNS_LABEL.match(label))


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    """The mTLS policy: which certificates are accepted and what identity they give.

    An empty `allow` accepts every certificate the handshake verified. A role
    or scope is granted when any of its rules matches a name of the certificate.
    """

    allow: tuple[NameRule, ...] = ()
    subject: SubjectSource = "san"
    roles: Mapping[str, tuple[NameRule, ...]] | None = None
    scopes: Mapping[str, tuple[NameRule, ...]] | None = None


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """An accepted client certificate and the caller it names.

    `subject` starts with `cert:` and the source, as in
    `cert:dns:a.clients.example.test`, `cert:uri:spiffe://example.test/app`,
    `cert:dn:CN=app,O=Example` or `cert:sha256:<hex>`, so a certificate
    subject never equals a token's `sub` or another kind of name.
    """

    certificate: ClientCertificate
    subject: str
    roles: frozenset[str]
    scopes: frozenset[str]


def parse_client_certificate(der: bytes) -> ClientCertificate:
    """Parse a DER certificate, or raise ClientCertificateRejected(MALFORMED)."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        extensions = certificate.extensions
        names = _san_values(extensions)
        usage = _extended_key_usage(extensions)
        subject = certificate.subject.rfc4514_string()
        issuer = certificate.issuer.rfc4514_string()
        subject_values = [attribute.value for attribute in certificate.subject]
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        # cryptography raises ValueError for bad DER, a malformed extension, or
        # a SAN that is not ASCII.
        raise ClientCertificateRejected(MALFORMED) from None
    has_nul = any("\x00" in value for _, value in names) or any(
        _contains_nul(value) for value in subject_values
    )
    return ClientCertificate(
        subject=subject,
        issuer=issuer,
        names=names,
        serial=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        extended_key_usage=usage,
        has_nul_name=has_nul,
    )


def check_validity(certificate: ClientCertificate, now: datetime.datetime) -> None:
    """Reject a certificate outside notBefore through notAfter, both inclusive (RFC 5280)."""
    _require_aware(now)
    if now < certificate.not_before:
        raise ClientCertificateRejected(NOT_YET_VALID)
    if now > certificate.not_after:
        raise ClientCertificateRejected(EXPIRED)


def check_client_certificate(
    certificate: ClientCertificate, allow: Iterable[NameRule], now: datetime.datetime
) -> tuple[SanKind, str] | None:
    """Apply every check to `certificate` and return the SAN that matched an allow rule.

    The return value is the type and value of the first SAN, in certificate
    order, that matches a rule of `allow`. It is None when `allow` is empty
    or only a subject rule matched. Raises ClientCertificateRejected for the
    first check that fails, in this order: validity, extended key usage, NUL
    bytes, allow rules.
    """
    check_validity(certificate, now)
    usage = certificate.extended_key_usage
    if usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string not in usage:
        raise ClientCertificateRejected(WRONG_USAGE)
    # A NUL byte can make one name read as another in C code (the "null
    # prefix" attack on www.example.test\0.attacker.test), so such a
    # certificate gets no identity at all, even with an empty allow list.
    if certificate.has_nul_name:
        raise ClientCertificateRejected(NUL_IN_NAME)
    rules = tuple(allow)
    if not rules:
        return None
    for kind, value in certificate.names:
        if any(rule.matches(kind, value) for rule in rules):
            return kind, value
    if any(rule.matches("subject", certificate.subject) for rule in rules):
        return None
    raise ClientCertificateRejected(NO_ALLOW_MATCH)


def identify(der: bytes, policy: IdentityPolicy, now: datetime.datetime) -> ClientIdentity:
    """Parse and check a client certificate, then derive its subject, roles and scopes."""
    certificate = parse_client_certificate(der)
    matched = check_client_certificate(certificate, policy.allow, now)
    return ClientIdentity(
        certificate=certificate,
        subject=_subject(certificate, policy.subject, matched),
        roles=_granted(certificate, policy.roles),
        scopes=_granted(certificate, policy.scopes),
    )


def _subject(
    certificate: ClientCertificate, source: SubjectSource, matched: tuple[SanKind, str] | None
) -> str:
    if source == "dn":
        return f"cert:dn:{certificate.subject}"
    if source == "fingerprint":
        return f"cert:sha256:{certificate.fingerprint_sha256}"
    # The SAN that matched an allow rule, else the first SAN.
    if matched is None:
        if not certificate.names:
            raise ClientCertificateRejected(NO_SUBJECT_NAME)
        matched = certificate.names[0]
    kind, value = matched
    # DNS names compare without case, so their canonical form is lowercase.
    return f"cert:{kind}:{value.lower() if kind == 'dns' else value}"


def _granted(
    certificate: ClientCertificate, grants: Mapping[str, tuple[NameRule, ...]] | None
) -> frozenset[str]:
    if not grants:
        return frozenset()
    names: tuple[tuple[NameKind, str], ...] = (
        *certificate.names,
        ("subject", certificate.subject),
    )
    return frozenset(
        grant
        for grant, rules in grants.items()
        if any(rule.matches(kind, value) for rule in rules for kind, value in names)
    )


def _contains_nul(value: str | bytes) -> bool:
    return ("\x00" in value) if isinstance(value, str) else (b"\x00" in value)


def _san_values(extensions: x509.Extensions) -> tuple[tuple[SanKind, str], ...]:
    try:
        extension = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names: list[tuple[SanKind, str]] = []
    for name in extension.value:
        for name_type, kind in _SAN_TYPES:
            if isinstance(name, name_type):
                names.append((kind, str(name.value)))
    return tuple(names)


def _extended_key_usage(extensions: x509.Extensions) -> frozenset[str] | None:
    try:
        extension = extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return None
    return frozenset(oid.dotted_string for oid in extension.value)


def _normalize_dns_rule(value: str) -> str:
    name = value.lower()
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if not value.isascii() or not all(_DNS_LABEL.match(label) for label in labels):
        raise ValueError(
            f"dns: invalid name {value!r}: expected a DNS name such as "
            "client.example.test, or *.example.test for one label under it"
        )
    return name


def _require_aware(now: datetime.datetime) -> None:
    # A naive datetime cannot be compared with the certificate's UTC times.
    if now.tzinfo is None:
        raise ValueError("now: expected a timezone-aware datetime, such as one in UTC")
