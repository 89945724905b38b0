"""A throwaway PKI and a scripted HTTPS upstream on 127.0.0.1, for tests of TLS to upstreams.

`TestPki` issues certificates with `ringwall.tls.devca` and writes each one
with its key to a directory. `running_tls_upstream` serves `RawUpstream`'s
scripted responses over TLS, optionally requiring a client certificate.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from ringwall.config.tls import CertificateFiles
from ringwall.tls.client_context import public_key_pin
from ringwall.tls.devca import (
    CertifiedKey,
    LeafProfile,
    certificate_pem,
    create_ca,
    issue_leaf,
    private_key_pem,
)
from tests.support.loop_thread import running_loop
from tests.support.raw_upstream import DEFAULT_RESPONSE, RawUpstream, ResponseSource

LOOPBACK = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


class TestPki:
    """A CA in `directory` that issues server and client certificates as PEM files."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        self.name = name
        self.now = datetime.datetime.now(datetime.UTC)
        self.ca: CertifiedKey = create_ca(self.now)
        self.ca_file = directory / f"{name}.pem"
        self.ca_file.write_bytes(certificate_pem(self.ca.certificate))

    def server(self, stem: str, *names: x509.GeneralName) -> CertificateFiles:
        """Issue a server certificate for `names` (127.0.0.1 when none are given)."""
        return self._issue(stem, names or (LOOPBACK,), ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, stem: str) -> CertificateFiles:
        """Issue a client certificate named `stem`.ringwall.localhost."""
        name = x509.DNSName(f"{stem}.ringwall.localhost")
        return self._issue(stem, (name,), ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(
        self, stem: str, names: tuple[x509.GeneralName, ...], usage: x509.ObjectIdentifier
    ) -> CertificateFiles:
        profile = LeafProfile(
            common_name=stem,
            names=names,
            usage=usage,
            certificate_file=f"{self.name}-{stem}.pem",
            key_file=f"{self.name}-{stem}-key.pem",
            full_chain=False,
        )
        leaf = issue_leaf(self.ca, profile, self.now)
        cert = self.directory / profile.certificate_file
        key = self.directory / profile.key_file
        cert.write_bytes(certificate_pem(leaf.certificate))
        key.write_bytes(private_key_pem(leaf.key))
        return CertificateFiles(cert=cert, key=key)


def pin_of(files: CertificateFiles) -> str:
    """Return the pin of a certificate file, as written in a configuration: sha256/BASE64."""
    certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
    digest = public_key_pin(certificate.public_bytes(Encoding.DER))
    return "sha256/" + base64.b64encode(digest).decode("ascii")


def server_context(certificate: CertificateFiles, client_ca: Path | None = None) -> ssl.SSLContext:
    """Return a server context; with `client_ca`, clients must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


class TlsRawUpstream(RawUpstream):
    """A `RawUpstream` that serves TLS with `context`."""

    def __init__(
        self, context: ssl.SSLContext, response: ResponseSource = DEFAULT_RESPONSE
    ) -> None:
        super().__init__(response)
        self.context = context

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle_client, self.host, 0, ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]


@contextmanager
def running_tls_upstream(
    context: ssl.SSLContext, response: ResponseSource = DEFAULT_RESPONSE
) -> Iterator[TlsRawUpstream]:
    """Yield a started TlsRawUpstream hosted on a background event loop; stop it on exit."""
    with running_loop("tls-upstream") as loop_thread:
        upstream = TlsRawUpstream(context, response)
        loop_thread.run(upstream.start())
        try:
            yield upstream
        finally:
            loop_thread.run(upstream.stop())
