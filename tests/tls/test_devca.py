"""The development CA: certificate contents, loading the CA files, and when leaves are re-issued."""

import datetime
import ipaddress
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ringwall.tls.devca import (
    BACKDATE,
    CA_FILE,
    CA_KEY_FILE,
    CA_LIFETIME,
    CLIENT,
    LEAF_LIFETIME,
    RENEW_BEFORE,
    SERVER,
    CaInvalid,
    CertifiedKey,
    LeafProfile,
    certificate_pem,
    create_ca,
    issue_leaf,
    leaf_file_pem,
    leaf_reissue_reason,
    load_ca,
    private_key_pem,
)

NOW = datetime.datetime(2027, 3, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)

T = TypeVar("T", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def ca() -> CertifiedKey:
    return create_ca(NOW)


@pytest.fixture(scope="module")
def server(ca: CertifiedKey) -> CertifiedKey:
    return issue_leaf(ca, SERVER, NOW)


@pytest.fixture(scope="module")
def client(ca: CertifiedKey) -> CertifiedKey:
    return issue_leaf(ca, CLIENT, NOW)


def extension(certificate: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return certificate.extensions.get_extension_for_class(kind)


def common_names(name: x509.Name) -> list[str]:
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def assert_p256(certified: CertifiedKey) -> None:
    public_key = certified.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert isinstance(certified.key.curve, ec.SECP256R1)
    assert public_key == certified.key.public_key()
    assert isinstance(certified.certificate.signature_hash_algorithm, hashes.SHA256)


# The CA.


def test_ca_is_self_signed_p256(ca: CertifiedKey) -> None:
    assert_p256(ca)
    assert ca.certificate.subject == ca.certificate.issuer
    ca.certificate.verify_directly_issued_by(ca.certificate)


def test_ca_basic_constraints_pathlen_0(ca: CertifiedKey) -> None:
    constraints = extension(ca.certificate, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0


def test_ca_key_usage_cert_and_crl_sign(ca: CertifiedKey) -> None:
    usage = extension(ca.certificate, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert not usage.value.key_agreement
    assert not usage.value.content_commitment


def test_ca_subject_key_identifier(ca: CertifiedKey) -> None:
    key_id = extension(ca.certificate, x509.SubjectKeyIdentifier)
    assert not key_id.critical
    assert key_id.value == x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())


def test_ca_has_no_extended_key_usage(ca: CertifiedKey) -> None:
    with pytest.raises(x509.ExtensionNotFound):
        extension(ca.certificate, x509.ExtendedKeyUsage)


def test_ca_name_marks_development(ca: CertifiedKey) -> None:
    [name] = common_names(ca.certificate.subject)
    assert "Ringwall development CA" in name
    assert "not for production" in name


def test_ca_validity_about_10_years(ca: CertifiedKey) -> None:
    certificate = ca.certificate
    assert certificate.not_valid_before_utc == NOW - BACKDATE
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == CA_LIFETIME
    assert CA_LIFETIME == 3650 * DAY


def test_ca_serials_differ() -> None:
    assert create_ca(NOW).certificate.serial_number != create_ca(NOW).certificate.serial_number


def test_naive_time_rejected(ca: CertifiedKey) -> None:
    naive = datetime.datetime(2027, 3, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        create_ca(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        issue_leaf(ca, SERVER, naive)


# Leaf certificates.


@pytest.mark.parametrize("which", ["server", "client"])
def test_leaf_signed_by_ca(
    which: str, ca: CertifiedKey, server: CertifiedKey, client: CertifiedKey
) -> None:
    leaf = server if which == "server" else client
    assert_p256(leaf)
    assert leaf.certificate.issuer == ca.certificate.subject
    leaf.certificate.verify_directly_issued_by(ca.certificate)


def test_leaf_signature_fails_with_other_ca(server: CertifiedKey) -> None:
    other = create_ca(NOW)
    with pytest.raises(InvalidSignature):
        server.certificate.verify_directly_issued_by(other.certificate)


@pytest.mark.parametrize("which", ["server", "client"])
def test_leaf_constraints_and_key_usage(
    which: str, server: CertifiedKey, client: CertifiedKey
) -> None:
    certificate = (server if which == "server" else client).certificate
    constraints = extension(certificate, x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = extension(certificate, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    assert not usage.value.key_encipherment


@pytest.mark.parametrize("which", ["server", "client"])
def test_leaf_key_identifiers(
    which: str, ca: CertifiedKey, server: CertifiedKey, client: CertifiedKey
) -> None:
    leaf = server if which == "server" else client
    authority = extension(leaf.certificate, x509.AuthorityKeyIdentifier)
    ca_key_id = extension(ca.certificate, x509.SubjectKeyIdentifier).value
    assert not authority.critical
    assert authority.value.key_identifier == ca_key_id.digest
    subject = extension(leaf.certificate, x509.SubjectKeyIdentifier)
    assert subject.value == x509.SubjectKeyIdentifier.from_public_key(leaf.key.public_key())


def test_server_subject_alternative_names(server: CertifiedKey) -> None:
    names = extension(server.certificate, x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "ringwall.localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert len(list(names)) == 4


def test_server_extended_key_usage_only_server(server: CertifiedKey) -> None:
    usage = extension(server.certificate, x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_subject_and_name(client: CertifiedKey) -> None:
    assert common_names(client.certificate.subject) == ["demo-client"]
    names = extension(client.certificate, x509.SubjectAlternativeName).value
    assert list(names) == [x509.DNSName("demo-client.ringwall.localhost")]


def test_client_extended_key_usage_only_client(client: CertifiedKey) -> None:
    usage = extension(client.certificate, x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("which", ["server", "client"])
def test_leaf_validity_is_365_days(which: str, server: CertifiedKey, client: CertifiedKey) -> None:
    certificate = (server if which == "server" else client).certificate
    # RFC 5280 counts the validity period from notBefore through notAfter inclusive.
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc + SECOND
    assert lifetime == 365 * DAY
    assert lifetime == LEAF_LIFETIME + SECOND
    assert certificate.not_valid_before_utc == NOW - BACKDATE


def test_leaf_ends_with_ca(ca: CertifiedKey) -> None:
    # A CA with 100 days left signs leaves that end when it does.
    late = ca.certificate.not_valid_after_utc - 100 * DAY
    leaf = issue_leaf(ca, SERVER, late)
    assert leaf.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_leaf_without_ca_key_identifier() -> None:
    # A CA made by another tool, without a subject key identifier.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 1000 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf = issue_leaf(CertifiedKey(certificate, key), SERVER, NOW)
    authority = extension(leaf.certificate, x509.AuthorityKeyIdentifier).value
    expected = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    assert authority.key_identifier == expected


# PEM output.


def test_server_file_is_full_chain(ca: CertifiedKey, server: CertifiedKey) -> None:
    chain = x509.load_pem_x509_certificates(
        leaf_file_pem(SERVER, server.certificate, ca.certificate)
    )
    assert chain == [server.certificate, ca.certificate]


def test_client_file_is_leaf_only(ca: CertifiedKey, client: CertifiedKey) -> None:
    chain = x509.load_pem_x509_certificates(
        leaf_file_pem(CLIENT, client.certificate, ca.certificate)
    )
    assert chain == [client.certificate]


def test_private_key_pem_unencrypted_pkcs8(server: CertifiedKey) -> None:
    pem = private_key_pem(server.key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == server.key.private_numbers()


def test_certified_key_repr_hides_key(ca: CertifiedKey) -> None:
    assert "key=" not in repr(ca)


# Loading the CA files.


def test_load_ca_round_trip(ca: CertifiedKey) -> None:
    loaded = load_ca(certificate_pem(ca.certificate), private_key_pem(ca.key), NOW + 365 * DAY)
    assert loaded.certificate == ca.certificate
    assert loaded.key.private_numbers() == ca.key.private_numbers()


def test_load_ca_key_mismatch(ca: CertifiedKey) -> None:
    other = create_ca(NOW)
    with pytest.raises(CaInvalid, match="does not match") as caught:
        load_ca(certificate_pem(ca.certificate), private_key_pem(other.key), NOW)
    assert caught.value.file_name == CA_KEY_FILE


def test_load_ca_certificate_not_pem(ca: CertifiedKey) -> None:
    with pytest.raises(CaInvalid, match="not a PEM certificate") as caught:
        load_ca(b"garbage", private_key_pem(ca.key), NOW)
    assert caught.value.file_name == CA_FILE


@pytest.mark.parametrize(
    "key_pem",
    [
        b"",
        b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    ],
    ids=["empty", "bad-base64", "p384", "rsa"],
)
def test_load_ca_bad_key(ca: CertifiedKey, key_pem: bytes) -> None:
    with pytest.raises(CaInvalid, match="ECDSA P-256") as caught:
        load_ca(certificate_pem(ca.certificate), key_pem, NOW)
    assert caught.value.file_name == CA_KEY_FILE


def test_load_ca_encrypted_key(ca: CertifiedKey) -> None:
    encrypted = ca.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(CaInvalid, match="unencrypted") as caught:
        load_ca(certificate_pem(ca.certificate), encrypted, NOW)
    assert caught.value.file_name == CA_KEY_FILE


def test_load_ca_rejects_leaf(server: CertifiedKey) -> None:
    with pytest.raises(CaInvalid, match="not a CA certificate") as caught:
        load_ca(certificate_pem(server.certificate), private_key_pem(server.key), NOW)
    assert caught.value.file_name == CA_FILE


def test_load_ca_expired(ca: CertifiedKey) -> None:
    after = ca.certificate.not_valid_after_utc
    with pytest.raises(CaInvalid, match="expired on") as caught:
        load_ca(certificate_pem(ca.certificate), private_key_pem(ca.key), after)
    assert caught.value.file_name == CA_FILE


def test_load_ca_not_yet_valid(ca: CertifiedKey) -> None:
    before = ca.certificate.not_valid_before_utc - datetime.timedelta(seconds=1)
    with pytest.raises(CaInvalid, match="not valid before"):
        load_ca(certificate_pem(ca.certificate), private_key_pem(ca.key), before)


# When leaves are re-issued.


def files_of(
    ca: CertifiedKey, leaf: CertifiedKey, profile: LeafProfile = SERVER
) -> tuple[bytes, bytes]:
    return leaf_file_pem(profile, leaf.certificate, ca.certificate), private_key_pem(leaf.key)


def test_reissue_not_needed_when_fresh(
    ca: CertifiedKey, server: CertifiedKey, client: CertifiedKey
) -> None:
    assert leaf_reissue_reason(*files_of(ca, server), ca.certificate, SERVER, NOW) is None
    assert leaf_reissue_reason(*files_of(ca, client, CLIENT), ca.certificate, CLIENT, NOW) is None


def test_reissue_when_expiring_within_30_days(ca: CertifiedKey, server: CertifiedKey) -> None:
    not_after = server.certificate.not_valid_after_utc
    just_outside = not_after - RENEW_BEFORE - datetime.timedelta(seconds=1)
    assert leaf_reissue_reason(*files_of(ca, server), ca.certificate, SERVER, just_outside) is None
    inside = not_after - 29 * DAY
    reason = leaf_reissue_reason(*files_of(ca, server), ca.certificate, SERVER, inside)
    assert reason is not None
    assert "expires on" in reason


def test_reissue_when_expired(ca: CertifiedKey, server: CertifiedKey) -> None:
    later = server.certificate.not_valid_after_utc + DAY
    reason = leaf_reissue_reason(*files_of(ca, server), ca.certificate, SERVER, later)
    assert reason is not None
    assert "expires on" in reason


def test_reissue_when_not_yet_valid(ca: CertifiedKey, server: CertifiedKey) -> None:
    earlier = NOW - 2 * BACKDATE
    reason = leaf_reissue_reason(*files_of(ca, server), ca.certificate, SERVER, earlier)
    assert reason is not None
    assert "not valid before" in reason


def test_reissue_when_other_ca(ca: CertifiedKey, server: CertifiedKey) -> None:
    other = create_ca(NOW)
    chain = leaf_file_pem(SERVER, server.certificate, other.certificate)
    reason = leaf_reissue_reason(chain, private_key_pem(server.key), other.certificate, SERVER, NOW)
    assert reason is not None
    assert "not issued by the CA" in reason


def test_reissue_when_same_name_other_ca_key(ca: CertifiedKey) -> None:
    # A CA created again has the same name but another key, so the name alone proves nothing.
    replaced = create_ca(NOW)
    leaf = issue_leaf(replaced, SERVER, NOW)
    chain = leaf_file_pem(SERVER, leaf.certificate, ca.certificate)
    reason = leaf_reissue_reason(chain, private_key_pem(leaf.key), ca.certificate, SERVER, NOW)
    assert reason is not None
    assert "not issued by the CA" in reason


def test_reissue_when_key_mismatch(ca: CertifiedKey, server: CertifiedKey) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    chain = leaf_file_pem(SERVER, server.certificate, ca.certificate)
    reason = leaf_reissue_reason(chain, private_key_pem(other_key), ca.certificate, SERVER, NOW)
    assert reason == "the key does not match the certificate"


@pytest.mark.parametrize("chain", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_reissue_when_not_pem(ca: CertifiedKey, server: CertifiedKey, chain: bytes) -> None:
    reason = leaf_reissue_reason(chain, private_key_pem(server.key), ca.certificate, SERVER, NOW)
    assert reason == "the certificate file is not PEM"


def test_reissue_when_server_chain_lacks_ca(ca: CertifiedKey, server: CertifiedKey) -> None:
    leaf_only = certificate_pem(server.certificate)
    reason = leaf_reissue_reason(
        leaf_only, private_key_pem(server.key), ca.certificate, SERVER, NOW
    )
    assert reason is not None
    assert "does not end with the CA certificate" in reason


def test_reissue_when_client_file_has_chain(ca: CertifiedKey, client: CertifiedKey) -> None:
    chain = certificate_pem(client.certificate) + certificate_pem(ca.certificate)
    reason = leaf_reissue_reason(chain, private_key_pem(client.key), ca.certificate, CLIENT, NOW)
    assert reason == "the certificate file contains more than one certificate"


def test_reissue_when_profile_differs(ca: CertifiedKey, client: CertifiedKey) -> None:
    # A client certificate in the server's files: other names and usage.
    chain = leaf_file_pem(SERVER, client.certificate, ca.certificate)
    reason = leaf_reissue_reason(chain, private_key_pem(client.key), ca.certificate, SERVER, NOW)
    assert reason is not None
    assert "names or extended key usage differ" in reason
