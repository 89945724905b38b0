"""TLS from the gateway to the servers it connects to: upstreams and Redis.

`build_client_tls` turns a `ClientTlsConfig` into a `ClientTls`: one
`ssl.SSLContext`, built when a runtime is built and shared by every
connection to the upstream or store, with the server name to check and the
public-key pins.

The context requires TLS 1.2 or newer and a certificate chain that verifies
against the configured CA bundle (the system roots when none is set), and
checks the certificate's names against `server_name` or the target host.
For an IP-address host the ssl module checks the certificate's IP address
entries and sends no SNI, because RFC 6066, section 3, allows only DNS names
there.

Python's ssl module has no hook into certificate verification, so pins are
checked after the handshake: `ClientTls.check_pins` raises `PinMismatch`,
which callers treat as a failed connection.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ringwall.config.tls import CertificateFiles, ClientTlsConfig
from ringwall.errors import RingwallError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class ClientTlsError(RingwallError, ValueError):
    """Files of a `ClientTlsConfig` that cannot be used: a CA bundle, certificate or key.

    It is a ValueError, so a configuration validator that raises it reports
    a load error with the key path.
    """


class PinMismatch(ConnectionError):
    """The server's certificate has a public key that matches none of the configured pins."""


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The TLS settings of connections to one upstream or one Redis deployment."""

    context: ssl.SSLContext = field(repr=False)
    # Checked against the certificate instead of the host that is connected to.
    server_name: str | None
    # SHA-256 digests of the accepted SubjectPublicKeyInfo structures. Empty turns pinning off.
    pins: frozenset[bytes]

    def server_hostname(self, host: str) -> str:
        """Return the name to send as SNI and to check the certificate against, for `host`."""
        return self.server_name or host

    def check_pins(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> None:
        """Raise PinMismatch unless the peer certificate's public key matches a pin.

        Does nothing when no pins are configured. `ssl_object` is the
        transport's `ssl_object` extra after the handshake.
        """
        if not self.pins:
            return
        certificate = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if certificate is None or public_key_pin(certificate) not in self.pins:
            raise PinMismatch(
                "certificate pin mismatch: the public key of the server's certificate "
                f"matches none of the {len(self.pins)} configured pins"
            )


def build_client_tls(config: ClientTlsConfig | None) -> ClientTls:
    """Build the context and pin set for `config`, where None means system roots and no pins.

    Raises ClientTlsError, naming the file, when the CA bundle contains no
    usable certificate or the client key cannot be loaded or does not match
    its certificate.
    """
    if config is None:
        config = ClientTlsConfig()
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if config.ca is None else str(config.ca)
        )
    except ssl.SSLError as exc:
        raise ClientTlsError(
            f"CA file {config.ca}: no CA certificate could be loaded ({exc.reason or exc}): "
            "expected PEM certificates"
        ) from None
    context.minimum_version = MINIMUM_VERSION
    # create_default_context sets both already. They are repeated here
    # because a connection without them would accept any server.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if config.client_certificate is not None:
        _load_client_certificate(context, config.client_certificate)
    pins = frozenset(base64.b64decode(pin) for pin in config.pins)
    return ClientTls(context, config.server_name, pins)


def _load_client_certificate(context: ssl.SSLContext, files: CertificateFiles) -> None:
    check_client_certificate(files)
    try:
        context.load_cert_chain(str(files.cert), str(files.key), password=_no_password)
    except (ssl.SSLError, ClientTlsError) as exc:
        raise ClientTlsError(
            f"private key file {files.key} cannot be used with certificate {files.cert}: {exc}"
        ) from None


def _no_password() -> bytes:
    # Without a callback, OpenSSL would prompt on the terminal for the
    # password of an encrypted key and block the worker.
    raise ClientTlsError("the key is encrypted: expected an unencrypted PEM private key")


def check_client_certificate(files: CertificateFiles) -> None:
    """Raise ClientTlsError, naming the key file, unless the key matches the certificate.

    The first certificate in `files.cert` is the one the key must match.
    """
    try:
        certificates = x509.load_pem_x509_certificates(files.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ClientTlsError(f"certificate file {files.cert} cannot be read: {exc}") from None
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except TypeError:
        raise ClientTlsError(
            f"private key file {files.key} is encrypted: expected an unencrypted PEM private key"
        ) from None
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise ClientTlsError(
            f"private key file {files.key} does not contain a valid PEM private key: {exc}"
        ) from None
    encoding = serialization.Encoding.DER
    public_format = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        certificate_key = certificates[0].public_key().public_bytes(encoding, public_format)
    except UnsupportedAlgorithm as exc:
        raise ClientTlsError(f"certificate file {files.cert}: {exc}") from None
    if key.public_key().public_bytes(encoding, public_format) != certificate_key:
        raise ClientTlsError(
            f"private key file {files.key} does not match the certificate in {files.cert}"
        )


def public_key_pin(certificate_der: bytes) -> bytes:
    """Return the SHA-256 digest of a DER certificate's SubjectPublicKeyInfo.

    Returns b"" for a certificate or key type that cryptography cannot
    parse, which matches no pin.
    """
    try:
        public_key = x509.load_der_x509_certificate(certificate_der).public_key()
    except (ValueError, UnsupportedAlgorithm):
        return b""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def describe_tls_error(exc: ssl.SSLError) -> str:
    """Return a one-line reason for a failed handshake, for logs and error messages."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    return f"TLS handshake failed: {exc.reason or exc}"
