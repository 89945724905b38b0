"""A local development CA and the server and client certificates it signs.

`ringwall certs dev` writes these files, like mkcert does:

- `ca.pem`, `ca-key.pem`: the CA, valid for about 10 years, so clients that
  trust `ca.pem` keep working while the leaf certificates are re-issued;
- `server.pem` (the server certificate, then the CA), `server-key.pem`;
- `client.pem`, `client-key.pem`: a demo client certificate for mutual TLS.

Every key is ECDSA P-256 and every signature ECDSA with SHA-256. The private
keys are unencrypted PEM, so these certificates are fit only for development
and tests.

The functions here take the current time as an argument and return
certificate objects or PEM bytes. Reading and writing the files is the
caller's work (`ringwall/certs_cli.py`).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ringwall.errors import RingwallError

__all__ = [
    "BACKDATE",
    "CA_FILE",
    "CA_KEY_FILE",
    "CA_LIFETIME",
    "CLIENT",
    "CLIENT_FILE",
    "CLIENT_KEY_FILE",
    "LEAF_LIFETIME",
    "LEAF_PROFILES",
    "RENEW_BEFORE",
    "SERVER",
    "SERVER_FILE",
    "SERVER_KEY_FILE",
    "CaInvalid",
    "CertifiedKey",
    "LeafProfile",
    "certificate_pem",
    "create_ca",
    "issue_leaf",
    "leaf_file_pem",
    "leaf_reissue_reason",
    "load_ca",
    "private_key_pem",
]

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"
CLIENT_FILE = "client.pem"
CLIENT_KEY_FILE = "client-key.pem"

CA_LIFETIME = datetime.timedelta(days=3650)
# Mozilla's server-side TLS configurations allow a certificate lifespan of at
# most 366 days, and sslyze's compliance check requires less; the CA/Browser
# Forum allows 397. Validity counts from notBefore through notAfter inclusive
# (RFC 5280, section 4.1.2.5), hence one second less. The client
# certificate gets the same lifetime.
LEAF_LIFETIME = datetime.timedelta(days=365) - datetime.timedelta(seconds=1)
# A leaf that expires sooner than this is re-issued on the next run.
RENEW_BEFORE = datetime.timedelta(days=30)
# Certificates start this long before their creation, so a client whose
# clock is a little behind does not reject a fresh certificate as not yet valid.
BACKDATE = datetime.timedelta(hours=1)

_ORGANIZATION = "Ringwall development"
_CA_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, "Ringwall development CA - not for production use"),
    ]
)


class CaInvalid(RingwallError):
    """CA files that cannot be used. `file_name` is `CA_FILE` or `CA_KEY_FILE`."""

    def __init__(self, file_name: str, problem: str) -> None:
        super().__init__(problem)
        self.file_name = file_name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)


@dataclass(frozen=True, slots=True)
class LeafProfile:
    """A kind of leaf certificate: its subject, names, usage and file names.

    With `full_chain`, the certificate file contains the leaf and then the CA,
    as servers send it. Otherwise it contains the leaf alone.
    """

    common_name: str
    names: tuple[x509.GeneralName, ...]
    usage: ObjectIdentifier
    certificate_file: str
    key_file: str
    full_chain: bool


SERVER = LeafProfile(
    common_name="localhost",
    # The demo configuration matches no host names, so the server certificate
    # names loopback and one name under .localhost, which RFC 6761 reserves for loopback.
    names=(
        x509.DNSName("localhost"),
        x509.DNSName("ringwall.localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ),
    usage=ExtendedKeyUsageOID.SERVER_AUTH,
    certificate_file=SERVER_FILE,
    key_file=SERVER_KEY_FILE,
    full_chain=True,
)

CLIENT = LeafProfile(
    common_name="demo-client",
    names=(x509.DNSName("demo-client.ringwall.localhost"),),
    usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    certificate_file=CLIENT_FILE,
    key_file=CLIENT_KEY_FILE,
    full_chain=False,
)

LEAF_PROFILES = (SERVER, CLIENT)


def create_ca(now: datetime.datetime) -> CertifiedKey:
    """Create a self-signed CA that may sign leaf certificates only (pathlen 0)."""
    _require_aware(now)
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = now - BACKDATE
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_CA_NAME)
        .issuer_name(_CA_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(certificate, key)


def issue_leaf(ca: CertifiedKey, profile: LeafProfile, now: datetime.datetime) -> CertifiedKey:
    """Create a key and a leaf certificate for `profile`, signed by `ca`.

    The certificate ends `LEAF_LIFETIME` after its start, or when the CA
    ends, whichever comes first.
    """
    _require_aware(now)
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = now - BACKDATE
    not_after = min(not_before + LEAF_LIFETIME, ca.certificate.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, profile.common_name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([profile.usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(profile.names)), critical=False)
        .add_extension(_authority_key_identifier(ca), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return CertifiedKey(certificate, key)


def load_ca(certificate_pem: bytes, key_pem: bytes, now: datetime.datetime) -> CertifiedKey:
    """Parse the CA files and check that they can sign leaf certificates at `now`.

    Raises CaInvalid, naming the file, when a file is not PEM, the key is not
    an unencrypted ECDSA P-256 key or does not match the certificate, the
    certificate is not a CA, or it is not valid at `now`.
    """
    _require_aware(now)
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError as exc:
        raise CaInvalid(CA_FILE, f"not a PEM certificate ({exc})") from None
    key = _load_ec_key(key_pem)
    if key is None:
        raise CaInvalid(CA_KEY_FILE, "not an unencrypted ECDSA P-256 private key in PEM")
    if not _same_public_key(certificate, key):
        raise CaInvalid(CA_KEY_FILE, f"the key does not match the certificate in {CA_FILE}")
    if not _is_signing_ca(certificate):
        raise CaInvalid(
            CA_FILE, "not a CA certificate (basicConstraints CA:true and keyCertSign are required)"
        )
    if now < certificate.not_valid_before_utc:
        raise CaInvalid(CA_FILE, f"not valid before {_format(certificate.not_valid_before_utc)}")
    if now >= certificate.not_valid_after_utc:
        raise CaInvalid(CA_FILE, f"expired on {_format(certificate.not_valid_after_utc)}")
    return CertifiedKey(certificate, key)


def leaf_reissue_reason(
    chain_pem: bytes,
    key_pem: bytes,
    ca: x509.Certificate,
    profile: LeafProfile,
    now: datetime.datetime,
) -> str | None:
    """Return why the leaf files must be issued again, or None if they can stay.

    The chain must be the leaf, signed by `ca`, followed by `ca` alone when
    `profile.full_chain` is set, and the key must match the leaf. The leaf
    must be valid at `now` for at least `RENEW_BEFORE` more, and carry the
    names and usage of `profile`.
    """
    _require_aware(now)
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        return "the certificate file is not PEM"
    leaf = chain[0]
    key = _load_ec_key(key_pem)
    if key is None or not _same_public_key(leaf, key):
        return "the key does not match the certificate"
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return f"the certificate was not issued by the CA in {CA_FILE}"
    if profile.full_chain and chain[1:] != [ca]:
        return f"the certificate file does not end with the CA certificate from {CA_FILE}"
    if not profile.full_chain and len(chain) != 1:
        return "the certificate file contains more than one certificate"
    if now < leaf.not_valid_before_utc:
        return f"the certificate is not valid before {_format(leaf.not_valid_before_utc)}"
    if leaf.not_valid_after_utc - now < RENEW_BEFORE:
        return f"the certificate expires on {_format(leaf.not_valid_after_utc)}"
    if _leaf_names(leaf) != set(profile.names) or _leaf_usages(leaf) != [profile.usage]:
        return "the certificate's names or extended key usage differ from the current ones"
    return None


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def leaf_file_pem(profile: LeafProfile, leaf: x509.Certificate, ca: x509.Certificate) -> bytes:
    """Return the content of `profile.certificate_file`: the leaf, then the CA if `full_chain`."""
    if profile.full_chain:
        return certificate_pem(leaf) + certificate_pem(ca)
    return certificate_pem(leaf)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return `key` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _require_aware(now: datetime.datetime) -> None:
    # cryptography reads a naive datetime as UTC, which would be wrong for a local time.
    if now.tzinfo is None:
        raise ValueError("now: expected a timezone-aware datetime, such as one in UTC")


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        # A CA signs CRLs with the same key, so it gets cRLSign with keyCertSign.
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(ca: CertifiedKey) -> x509.AuthorityKeyIdentifier:
    try:
        key_id = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        # A CA made by another tool may lack the extension. Then the identifier
        # is the SHA-1 hash of the CA's public key, as create_ca computes it.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(key_id.value)


def _load_ec_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey | None:
    try:
        # TypeError: the key is encrypted. UnsupportedAlgorithm: an unknown key type.
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        return None
    return key


def _same_public_key(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    encoding = serialization.Encoding.DER
    public_format = serialization.PublicFormat.SubjectPublicKeyInfo
    certificate_key = certificate.public_key().public_bytes(encoding, public_format)
    return certificate_key == key.public_key().public_bytes(encoding, public_format)


def _is_signing_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        # keyUsage restricts the key only when present (RFC 5280, section 4.2.1.3).
        return constraints.value.ca
    return constraints.value.ca and usage.value.key_cert_sign


def _leaf_names(leaf: x509.Certificate) -> set[x509.GeneralName]:
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return set(extension.value)


def _leaf_usages(leaf: x509.Certificate) -> list[ObjectIdentifier]:
    try:
        extension = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return []
    return list(extension.value)


def _format(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
