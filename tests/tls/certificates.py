"""Client certificates made for tests, as DER, with every field chosen by the caller.

The certificates are self-signed: the policy code under test never checks a
chain, which the TLS handshake has already done.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH

# One key for every certificate: generating a key per test would only slow the tests.
_KEY = ec.generate_private_key(ec.SECP256R1())


def dns(name: str) -> x509.GeneralName:
    return x509.DNSName(name)


def email(address: str) -> x509.GeneralName:
    return x509.RFC822Name(address)


def uri(value: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(value)


def ip(address: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(address))


def make_certificate(
    names: Sequence[x509.GeneralName] = (dns("app.clients.example.test"),),
    *,
    usages: Sequence[ObjectIdentifier] | None = (CLIENT_AUTH,),
    common_name: str = "app",
    not_before: datetime.datetime = NOW - datetime.timedelta(hours=1),
    not_after: datetime.datetime = NOW + datetime.timedelta(days=30),
    serial: int = 0x1234ABCD,
) -> bytes:
    """Return the DER of a certificate; `usages=None` leaves out the EKU extension."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test client CA")]))
        .public_key(_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    certificate = builder.sign(_KEY, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.DER)
