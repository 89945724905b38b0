"""Server-side TLS of the HTTPS listener: profiles, certificates chosen by SNI, client auth.

One `ServerTls` lives in each worker, and the listening socket uses its
`context`. OpenSSL takes the protocol versions, ciphers, groups and session
tickets of a connection from that first context. Its SNI callback then
moves each connection to the context of the certificate and client-auth
policy that the server name selects. Certificates are read
again by `reload_changed_files`, and new connections get the new ones while
open connections keep theirs.

Session tickets are encrypted with keys derived from a secret that the
supervisor makes before forking, so any worker can resume a session that
another worker started. A connection under a policy that requests client
certificates gets no ticket, so a session never carries a client
certificate to another name or past its check.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ringwall.config.model import Config
from ringwall.config.tls import ClientAuthConfig, TlsListenerConfig
from ringwall.errors import RingwallError
from ringwall.tls import openssl
from ringwall.tls.handshake import HandshakeInfo

log = logging.getLogger("ringwall.tls")

# Mozilla's intermediate configuration: ECDHE key exchange with AEAD ciphers
# for TLS 1.2, ECDSA certificates first. TLS 1.3 uses OpenSSL's default
# suites, which are the three Mozilla lists.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
GROUPS = "X25519:P-256:P-384"
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
# How long a session can be resumed: one day, as in Mozilla's generated
# nginx configuration (ssl_session_timeout 1d).
SESSION_LIFETIME = 86_400
DEFAULT_POLICY = -1

_VERIFY_MODES = {
    "none": openssl.SSL_VERIFY_NONE,
    "optional": openssl.SSL_VERIFY_PEER,
    "required": openssl.SSL_VERIFY_PEER | openssl.SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
}
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TlsConfigError(RingwallError):
    """A certificate, key or CA file that the listener cannot use, with its config key path."""

    def __init__(self, key_path: str, problem: str) -> None:
        super().__init__(f"{key_path}: {problem}")
        self.key_path = key_path
        self.problem = problem


@dataclass(frozen=True)
class _Certificate:
    """One configured certificate with the names it covers and its files' change times."""

    cert: Path
    key: Path
    dns_names: frozenset[str]
    ip_addresses: frozenset[str]
    stamp: tuple[float, float]

    def covers(self, host: str) -> bool:
        if host in self.dns_names or host in self.ip_addresses:
            return True
        first, dot, rest = host.partition(".")
        return bool(dot and first and f"*.{rest}" in self.dns_names)


def _stamp(certificate: Path, key: Path) -> tuple[float, float]:
    try:
        return (certificate.stat().st_mtime, key.stat().st_mtime)
    except OSError:
        return (0.0, 0.0)


def _read_certificate(index: int, cert: Path, key: Path) -> _Certificate:
    key_path = f"server.tls.certificates[{index}]"
    stamp = _stamp(cert, key)  # before reading, as for CRLs in `ServerTls.apply`
    try:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsConfigError(f"{key_path}.cert", f"cannot read {cert}: {exc}") from None
    dns: set[str] = set()
    ips: set[str] = set()
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names is not None:
        dns = {name.lower().rstrip(".") for name in names.get_values_for_type(x509.DNSName)}
        ips = {str(address) for address in names.get_values_for_type(x509.IPAddress)}
    # Check that the key matches and that OpenSSL accepts both files.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"{key_path}.key",
            f"cannot use {key} with {cert}: {exc}. Check that the key "
            "belongs to the certificate and is not encrypted",
        ) from None
    return _Certificate(cert, key, frozenset(dns), frozenset(ips), stamp)


def _client_auth_path(policy: int) -> str:
    if policy == DEFAULT_POLICY:
        return "server.tls.client_auth"
    return f"server.tls.sni[{policy}].client_auth"


def _read_crls(path: Path, key_path: str, now: float) -> tuple[bytes, ...]:
    """Read and check the PEM CRLs in `path`, and return each one in DER.

    The contexts get these bytes rather than the path, so a file replaced
    after this check cannot add anything that was not checked.
    """
    try:
        data = path.read_bytes()
        blocks = _CRL_BLOCK.findall(data)
        crls = [x509.load_pem_x509_crl(block) for block in blocks]
    except (OSError, ValueError) as exc:
        raise TlsConfigError(key_path, f"cannot read the CRLs in {path}: {exc}") from None
    if not crls:
        raise TlsConfigError(
            key_path,
            f"{path} contains no X509 CRL block: expected the PEM CRLs of the client CAs",
        )
    # OpenSSL would trust a certificate in a file it loads as a CA, so a
    # file that only needs to carry signed CRLs must not contain one.
    if data.count(b"-----BEGIN ") != len(blocks):
        raise TlsConfigError(
            key_path,
            f"{path} contains a PEM block other than X509 CRL: keep only the CRLs in this "
            "file, and the CA certificates in client_auth.ca",
        )
    for crl in crls:
        next_update = crl.next_update_utc
        if next_update is not None and next_update.timestamp() < now:
            log.warning(
                "a client CRL has expired, so every client certificate of its CA fails "
                "the handshake until the file is replaced",
                extra={"file": str(path), "issuer": crl.issuer.rfc4514_string()},
            )
    return tuple(crl.public_bytes(serialization.Encoding.DER) for crl in crls)


def _crl_stamps(config: TlsListenerConfig) -> tuple[tuple[Path, float], ...]:
    """Return each CRL file of `config` with its modification time, 0.0 if unreadable."""
    paths = [config.client_auth.crl, *(entry.client_auth.crl for entry in config.sni)]
    stamps = []
    for path in dict.fromkeys(path for path in paths if path is not None):
        try:
            stamps.append((path, path.stat().st_mtime))
        except OSError:
            stamps.append((path, 0.0))
    return tuple(stamps)


def ticket_keys(secret: bytes, period: int) -> bytes:
    """Derive the 80 bytes of session ticket keys for one rotation period from `secret`."""
    label = b"ringwall session tickets %d" % period
    first = hmac.new(secret, label + b" 1", hashlib.sha512).digest()
    second = hmac.new(secret, label + b" 2", hashlib.sha512).digest()
    return (first + second)[: openssl.TICKET_KEYS_LENGTH]


def new_ticket_secret() -> bytes:
    return os.urandom(32)


def check_tls_files(config: Config) -> str:
    """Build the HTTPS listener's contexts once to check its files.

    Return "" if they load, or else the problem with its config key path.
    """
    if config.server.tls is None:
        return ""
    try:
        ServerTls(config.server.tls, new_ticket_secret())
    except TlsConfigError as exc:
        return str(exc)
    return ""


class ServerTls:
    """The TLS contexts of one HTTPS listener in one worker."""

    def __init__(
        self,
        config: TlsListenerConfig,
        ticket_secret: bytes,
        clock: Callable[[], float] = time.time,
        alpn: tuple[str, ...] = ("http/1.1",),
    ) -> None:
        policies = [config.client_auth, *(entry.client_auth for entry in config.sni)]
        if not openssl.available() and any(policy.mode != "none" for policy in policies):
            raise TlsConfigError(
                "server.tls.client_auth",
                "client certificates need OpenSSL settings that this Python build does not expose",
            )
        self._clock = clock
        self._ticket_secret = ticket_secret
        self._ticket_period = -1
        self._alpn = alpn
        self.profile = config.profile
        # The SNI callback requests client certificates per connection.
        self.context = self._profile_context(ClientAuthConfig(), DEFAULT_POLICY)
        self.context.sni_callback = self._on_server_name
        if config.session_tickets and openssl.available():
            openssl.set_session_timeout(self.context, SESSION_LIFETIME)
        else:
            self.context.options |= ssl.OP_NO_TICKET
        self.config = config
        self._certificates: tuple[_Certificate, ...] = ()
        self._contexts: dict[tuple[int, int], ssl.SSLContext] = {}
        self._crl_stamps: tuple[tuple[Path, float], ...] = ()
        self.apply(config)
        self.rotate_ticket_keys()

    # -- configuration --

    def apply(self, config: TlsListenerConfig) -> None:
        """Load the certificates and policies of `config` and switch to them.

        On TlsConfigError the current certificates and policies stay in use.
        """
        # Taken before the files are read, so that a file replaced during the
        # load differs from its stamp and is read again at the next check.
        crl_stamps = _crl_stamps(config)
        certificates = tuple(
            _read_certificate(index, files.cert, files.key)
            for index, files in enumerate(config.certificates)
        )
        contexts = {}
        policies = [config.client_auth, *(entry.client_auth for entry in config.sni)]
        now = self._clock()
        for policy_index, policy in enumerate(policies, start=DEFAULT_POLICY):
            crls = (
                _read_crls(policy.crl, f"{_client_auth_path(policy_index)}.crl", now)
                if policy.crl is not None
                else ()
            )
            for cert_index, certificate in enumerate(certificates):
                contexts[(cert_index, policy_index)] = self._leaf_context(
                    certificate, policy, policy_index, crls
                )
        if config.profile != self.profile:
            log.warning("a change to server.tls.profile takes effect only after a restart")
        self.config = config
        self._certificates = certificates
        self._contexts = contexts
        self._crl_stamps = crl_stamps

    def reload_changed_files(self) -> bool:
        """Reload the certificate and CRL files if any changed; return whether they reloaded."""
        if (
            all(
                _stamp(certificate.cert, certificate.key) == certificate.stamp
                for certificate in self._certificates
            )
            and _crl_stamps(self.config) == self._crl_stamps
        ):
            return False
        try:
            self.apply(self.config)
        except TlsConfigError as exc:
            log.error(
                "cannot reload the TLS certificates, keeping the running ones",
                extra={"error": str(exc)},
            )
            return False
        log.info(
            "TLS certificates and CRLs reloaded", extra={"certificates": len(self._certificates)}
        )
        return True

    def rotate_ticket_keys(self) -> None:
        """Switch to the ticket keys of the current rotation period when it has changed."""
        if not openssl.available() or not self.config.session_tickets:
            return
        period = int(self._clock() // self.config.ticket_key_rotation)
        if period != self._ticket_period:
            openssl.set_ticket_keys(self.context, ticket_keys(self._ticket_secret, period))
            self._ticket_period = period

    def _profile_context(
        self, client_auth: ClientAuthConfig, policy: int, crls: tuple[bytes, ...] = ()
    ) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.profile == "modern":
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        else:
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(INTERMEDIATE_CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        context.set_alpn_protocols(list(self._alpn))
        if openssl.available():
            openssl.set_groups(context, GROUPS)
            openssl.set_session_id_context(context, b"ringwall-policy-%d" % policy)
        else:
            context.set_ecdh_curve("prime256v1")
        context.verify_mode = _CERT_REQS[client_auth.mode]
        if client_auth.ca is not None:
            try:
                context.load_verify_locations(cafile=str(client_auth.ca))
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError(
                    f"{_client_auth_path(policy)}.ca", f"cannot load {client_auth.ca}: {exc}"
                ) from None
        if crls:
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            openssl.add_crls(context, crls)
        return context

    def _leaf_context(
        self,
        certificate: _Certificate,
        client_auth: ClientAuthConfig,
        policy: int,
        crls: tuple[bytes, ...],
    ) -> ssl.SSLContext:
        context = self._profile_context(client_auth, policy, crls)
        context.load_cert_chain(certificate.cert, certificate.key)
        return context

    # -- per connection --

    def policy_for(self, host: str | None) -> int:
        """Return the index of the SNI policy covering `host`, or DEFAULT_POLICY."""
        if not host:
            return DEFAULT_POLICY
        wildcard = DEFAULT_POLICY
        for index, entry in enumerate(self.config.sni):
            for name in entry.names:
                if name == host:
                    return index
                if name.startswith("*.") and wildcard == DEFAULT_POLICY:
                    first, dot, rest = host.partition(".")
                    if dot and first and rest == name[2:]:
                        wildcard = index
        return wildcard

    def certificate_for(self, host: str | None) -> int:
        if host:
            for index, certificate in enumerate(self._certificates):
                if host in certificate.dns_names:
                    return index
            for index, certificate in enumerate(self._certificates):
                if certificate.covers(host):
                    return index
        return 0

    def client_auth(self, policy: int) -> ClientAuthConfig:
        if policy == DEFAULT_POLICY:
            return self.config.client_auth
        return self.config.sni[policy].client_auth

    def _on_server_name(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        try:
            name = server_name.lower().rstrip(".") if server_name else None
            policy = self.policy_for(name)
            certificate = self.certificate_for(name)
            context = self._contexts[(certificate, policy)]
            ssl_object.context = context
            mode = self.client_auth(policy).mode
            if mode != "none":
                if ssl_object.session_reused:
                    # No ticket is issued under this policy, so the session
                    # comes from another name and carries no checked certificate.
                    log.warning(
                        "TLS session resumed under another name's client certificate policy",
                        extra={"server_name": name},
                    )
                    return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
                openssl.ask_client_certificate(ssl_object, _VERIFY_MODES[mode])
            ssl_object.ringwall_selection = (name, policy, certificate)  # type: ignore[attr-defined]
        except Exception:
            log.exception("TLS server name selection failed", extra={"server_name": server_name})
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def handshake_info(self, ssl_object: ssl.SSLObject) -> HandshakeInfo | None:
        """Describe the finished handshake of `ssl_object`, or return None to drop the connection.

        TLS 1.2 decides on resumption after the SNI callback, so a session
        resumed under a policy that requests client certificates is found
        here. No ticket is issued under such a policy, so the session comes
        from another name and carries no checked certificate.
        """
        name, policy, _ = getattr(ssl_object, "ringwall_selection", (None, DEFAULT_POLICY, 0))
        mode = self.client_auth(policy).mode
        resumed = ssl_object.session_reused
        if resumed and mode != "none":
            log.warning(
                "TLS session resumed under another name's client certificate policy",
                extra={"server_name": name},
            )
            return None
        cipher = ssl_object.cipher()
        certificate = ssl_object.getpeercert(binary_form=True) if mode != "none" else None
        return HandshakeInfo(
            server_name=name,
            policy=policy,
            protocol=ssl_object.version() or "",
            cipher=cipher[0] if cipher else "",
            alpn=ssl_object.selected_alpn_protocol(),
            resumed=resumed,
            client_certificate=certificate or None,
        )

    def misdirected(self, host: str, handshake: HandshakeInfo) -> str | None:
        """Return why a request for `host` may not use this connection, or None if it may.

        A request is misdirected when its host falls under another client-auth
        policy than the handshake's, or when the handshake's certificate does
        not cover it (domain fronting).
        """
        if self.policy_for(host) != handshake.policy:
            return "the host uses another client certificate policy than this connection"
        index = self.certificate_for(handshake.server_name)
        if not self._certificates[index].covers(_bare_host(host)):
            return "the connection's certificate does not cover the host"
        return None


def _bare_host(host: str) -> str:
    """Return `host` without brackets around an IPv6 address."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.ip_address(host[1:-1]))
        except ValueError:
            return host
    return host
