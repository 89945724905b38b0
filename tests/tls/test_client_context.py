"""The client TLS context: verification settings, client certificates and pins.

Handshakes run in memory between two `ssl.SSLObject`s, so no socket is needed.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ringwall.config.tls import CertificateFiles, ClientTlsConfig
from ringwall.tls.client_context import (
    ClientTls,
    ClientTlsError,
    PinMismatch,
    build_client_tls,
    check_client_certificate,
    describe_tls_error,
    public_key_pin,
)
from tests.support.tls_upstream import TestPki, pin_of, server_context

NAME = "upstream.ringwall.localhost"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


class Handshake:
    """Both ends of one in-memory handshake, and the SNI name the server received."""

    def __init__(
        self, client_tls: ClientTls, server: ssl.SSLContext, host: str = "127.0.0.1"
    ) -> None:
        self.server_names: list[str | None] = []
        server.sni_callback = self._record_name
        client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_tls.context.wrap_bio(
            client_in, client_out, server_hostname=client_tls.server_hostname(host)
        )
        self.server = server.wrap_bio(server_in, server_out, server_side=True)
        for _ in range(10):
            finished = self._step(self.client) & self._step(self.server)
            server_in.write(client_out.read())
            client_in.write(server_out.read())
            if finished:
                return
        raise AssertionError("the in-memory handshake did not finish")

    def _record_name(self, _: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        self.server_names.append(name)

    @staticmethod
    def _step(end: ssl.SSLObject) -> bool:
        try:
            end.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True


def test_context_requires_verification(pki: TestPki) -> None:
    context = build_client_tls(ClientTlsConfig(ca=pki.ca_file)).context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1


def test_no_settings_use_system_roots() -> None:
    tls = build_client_tls(None)
    assert tls.context.verify_mode == ssl.CERT_REQUIRED
    assert tls.context.check_hostname
    assert tls.server_name is None
    assert tls.pins == frozenset()
    default = ssl.create_default_context()
    assert tls.context.cert_store_stats() == default.cert_store_stats()


def test_server_hostname_override(pki: TestPki) -> None:
    assert build_client_tls(None).server_hostname("10.0.0.5") == "10.0.0.5"
    named = build_client_tls(ClientTlsConfig(ca=pki.ca_file, server_name=NAME))
    assert named.server_hostname("10.0.0.5") == NAME


def test_ip_target_checks_ip_and_sends_no_sni(pki: TestPki) -> None:
    tls = build_client_tls(ClientTlsConfig(ca=pki.ca_file))
    handshake = Handshake(tls, server_context(pki.server("loopback")))
    assert handshake.server_names == [None]
    assert handshake.client.version() in ("TLSv1.2", "TLSv1.3")


def test_server_name_sent_and_checked(pki: TestPki) -> None:
    server = server_context(pki.server("named", x509.DNSName(NAME)))
    tls = build_client_tls(ClientTlsConfig(ca=pki.ca_file, server_name=NAME))
    assert Handshake(tls, server).server_names == [NAME]


def test_ip_target_rejects_name_only_certificate(pki: TestPki) -> None:
    server = server_context(pki.server("named", x509.DNSName(NAME)))
    tls = build_client_tls(ClientTlsConfig(ca=pki.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        Handshake(tls, server)
    assert describe_tls_error(caught.value).startswith(
        "certificate verify failed: IP address mismatch"
    )


def test_unknown_ca_rejected(pki: TestPki, tmp_path: Path) -> None:
    other = TestPki(tmp_path, "other-ca")
    tls = build_client_tls(ClientTlsConfig(ca=other.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        Handshake(tls, server_context(pki.server("loopback")))
    assert "unable to get local issuer certificate" in describe_tls_error(caught.value)


def test_client_certificate_presented(pki: TestPki, tmp_path: Path) -> None:
    clients = TestPki(tmp_path, "client-ca")
    certificate = clients.client("gateway")
    server = server_context(pki.server("loopback"), client_ca=clients.ca_file)
    tls = build_client_tls(ClientTlsConfig(ca=pki.ca_file, client_certificate=certificate))
    handshake = Handshake(tls, server)
    presented = handshake.server.getpeercert(binary_form=True)
    expected = x509.load_pem_x509_certificate(certificate.cert.read_bytes())
    assert presented is not None
    assert x509.load_der_x509_certificate(presented) == expected


def test_pin_match_passes(pki: TestPki) -> None:
    certificate = pki.server("loopback")
    other_pin = pin_of(pki.server("unused"))
    tls = build_client_tls(ClientTlsConfig(ca=pki.ca_file, pins=(other_pin, pin_of(certificate))))
    handshake = Handshake(tls, server_context(certificate))
    tls.check_pins(handshake.client)


def test_pin_mismatch_raises(pki: TestPki) -> None:
    other_pin = pin_of(pki.server("unused"))
    tls = build_client_tls(ClientTlsConfig(ca=pki.ca_file, pins=(other_pin,)))
    handshake = Handshake(tls, server_context(pki.server("loopback")))
    with pytest.raises(PinMismatch, match=r"^certificate pin mismatch"):
        tls.check_pins(handshake.client)
    with pytest.raises(PinMismatch):
        tls.check_pins(None)


def test_no_pins_accept_any_key(pki: TestPki) -> None:
    tls = build_client_tls(ClientTlsConfig(ca=pki.ca_file))
    tls.check_pins(None)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")
def test_pin_equals_openssl_pipeline(pki: TestPki) -> None:
    # The pipeline the configuration's error message gives for computing a pin.
    certificate = pki.server("loopback")
    public_key = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(certificate.cert)],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=public_key,
        check=True,
        capture_output=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, check=True, capture_output=True
    ).stdout
    leaf = x509.load_pem_x509_certificate(certificate.cert.read_bytes())
    assert public_key_pin(leaf.public_bytes(Encoding.DER)) == digest
    assert pin_of(certificate) == "sha256/" + base64.b64encode(digest).decode()


def test_unparsable_certificate_matches_no_pin() -> None:
    assert public_key_pin(b"not a certificate") == b""


def test_key_mismatch_names_key(pki: TestPki) -> None:
    first = pki.client("first")
    second = pki.client("second")
    pair = CertificateFiles(cert=first.cert, key=second.key)
    with pytest.raises(ClientTlsError) as caught:
        check_client_certificate(pair)
    assert str(caught.value) == (
        f"private key file {second.key} does not match the certificate in {first.cert}"
    )
    with pytest.raises(ClientTlsError, match="does not match"):
        build_client_tls(ClientTlsConfig(client_certificate=pair))


def test_key_file_without_key(pki: TestPki, tmp_path: Path) -> None:
    certificate = pki.client("gateway")
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ClientTlsError) as caught:
        check_client_certificate(CertificateFiles(cert=certificate.cert, key=not_a_key))
    assert str(caught.value).startswith(
        f"private key file {not_a_key} does not contain a valid PEM private key"
    )


def test_ca_file_without_certificate(tmp_path: Path) -> None:
    ca = tmp_path / "broken-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ClientTlsError, match="no CA certificate could be loaded"):
        build_client_tls(ClientTlsConfig(ca=ca))
