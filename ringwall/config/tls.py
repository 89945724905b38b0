"""Configuration of TLS: the HTTPS listener, client certificates, HTTP/2, and TLS to upstreams.

File paths are checked when the configuration loads. A certificate, key or
CA bundle that is missing, unreadable or contains no PEM block stops the load
with an error at its config path, so a gateway never starts without the trust
it was configured with.
The certificates themselves are parsed when the listener is built
(`ringwall.tls.context`), which reports a key that does not match its
certificate in the same way.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from ringwall.config.types import ByteSize, Duration, ListenAddress

Count = Annotated[int, Strict()]

_PEM_BEGIN = b"-----BEGIN "
_NAME_PATTERN = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_pem_file(path: Path, what: str) -> Path:
    """Check that `path` is a readable file with at least one PEM block, and return it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None
    if _PEM_BEGIN not in data:
        raise ValueError(f"{what} {path} contains no PEM block: expected a file in PEM format")
    return path


def normalize_server_name(value: str) -> str:
    """Validate a server name pattern and return it lowercased, without a trailing dot."""
    name = value.strip().lower().rstrip(".")
    if not _NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid server name {value!r}: expected a DNS name such as api.example.test "
            "or *.example.test"
        )
    return name


class CertificateFiles(_Model):
    """A certificate chain and its private key, both PEM files."""

    cert: Path
    key: Path

    @field_validator("cert")
    @classmethod
    def _check_cert(cls, value: Path) -> Path:
        return _check_pem_file(value, "certificate file")

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: Path) -> Path:
        return _check_pem_file(value, "private key file")


class ClientAuthConfig(_Model):
    """Settings for requesting client certificates in the handshake, and the CAs that sign them.

    `none` requests no certificate. `optional` requests one but also accepts
    a client without it, and routes with `auth: mtls` respond 401 to such a
    client. `required` ends the handshake of a client without a valid
    certificate. The CA bundle is the only trust anchor for client
    certificates, because the system roots are never used.

    `crl` names a PEM file of certificate revocation lists from those CAs.
    A client certificate that a CRL lists as revoked, or whose issuer has no
    CRL in the file, fails the handshake. An expired CRL fails every client
    certificate of its CA, as in OpenSSL, until the file is replaced.
    """

    mode: Literal["none", "optional", "required"] = "none"
    ca: Path | None = None
    crl: Path | None = None

    @field_validator("ca")
    @classmethod
    def _check_ca(cls, value: Path | None) -> Path | None:
        return None if value is None else _check_pem_file(value, "client CA file")

    @field_validator("crl")
    @classmethod
    def _check_crl(cls, value: Path | None) -> Path | None:
        return None if value is None else _check_pem_file(value, "client CRL file")

    @model_validator(mode="after")
    def _require_ca(self) -> ClientAuthConfig:
        if self.mode != "none" and self.ca is None:
            raise ValueError(
                f"client_auth mode {self.mode} needs ca: the PEM bundle of the CAs "
                "that sign client certificates"
            )
        if self.mode == "none" and self.crl is not None:
            raise ValueError(
                "client_auth crl applies only to client certificates: set mode to "
                "optional or required, or remove crl"
            )
        return self


class SniPolicy(_Model):
    """Settings for the server names a client may request in the handshake (SNI).

    A request whose Host falls under another policy than the one chosen in
    the handshake gets 421 Misdirected Request, so a client cannot pass the
    client-certificate check of one name and then send requests to another.
    """

    names: tuple[str, ...] = Field(min_length=1)
    client_auth: ClientAuthConfig = ClientAuthConfig()

    @field_validator("names", mode="before")
    @classmethod
    def _normalize_names(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of server names such as [internal.example.test]")
        return tuple(normalize_server_name(str(name)) for name in value)


class Http2Config(_Model):
    """HTTP/2 over TLS (ALPN h2), with the limits that bound one connection's cost."""

    enabled: bool = True
    max_concurrent_streams: Count = Field(100, ge=1, le=1000)
    # The decoded header list of one request, as SETTINGS_MAX_HEADER_LIST_SIZE.
    max_header_list_size: ByteSize = Field(65_536, ge=1024, le=1_048_576)
    # CONTINUATION frames after one HEADERS frame.
    max_continuation_frames: Count = Field(32, ge=0, le=10_000)
    # Streams the client may reset within `reset_window` before the
    # connection gets GOAWAY (Rapid Reset, CVE-2023-44487).
    max_reset_streams: Count = Field(200, ge=1, le=100_000)
    reset_window: Duration = Field(30.0, gt=0)
    initial_window_size: ByteSize = Field(1_048_576, ge=65_535, le=2**31 - 1)


class TlsListenerConfig(_Model):
    """The HTTPS listener: certificates chosen by SNI, a Mozilla profile, client certificates.

    `profile` follows Mozilla's server-side TLS guidelines, version 6.0: `modern` is
    TLS 1.3 only, `intermediate` adds TLS 1.2 with ECDHE and AEAD ciphers.
    Certificates are chosen by the server name the client requests. The first
    one serves clients that send no name or an unknown one. The files are
    checked for changes every `reload_interval` and read again when they change.
    """

    listen: ListenAddress = ("127.0.0.1", 8443)
    profile: Literal["modern", "intermediate"] = "intermediate"
    certificates: tuple[CertificateFiles, ...] = Field(min_length=1)
    client_auth: ClientAuthConfig = ClientAuthConfig()
    sni: tuple[SniPolicy, ...] = ()
    # The plain `server.listen` responds to every request with a 308 redirect to HTTPS.
    redirect_http: bool = True
    session_tickets: bool = True
    # Ticket keys are replaced this often, and a ticket stays valid for two periods.
    ticket_key_rotation: Duration = Field(43_200.0, ge=60)
    reload_interval: Duration = Field(5.0, ge=0.5)
    handshake_timeout: Duration = Field(10.0, gt=0)
    http2: Http2Config = Http2Config()

    @model_validator(mode="after")
    def _check_sni_names(self) -> TlsListenerConfig:
        seen: set[str] = set()
        for policy in self.sni:
            for name in policy.names:
                if name in seen:
                    raise ValueError(f"server name {name} is listed in more than one sni entry")
                seen.add(name)
        return self


def parse_pin(value: object) -> str:
    """Validate a public-key pin and return its base64 text without the `sha256/` prefix.

    A pin is the base64 SHA-256 digest of a DER SubjectPublicKeyInfo.
    """
    text = str(value).strip()
    if text.startswith("sha256/"):
        text = text[len("sha256/") :]
    try:
        digest = base64.b64decode(text, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(
            f"invalid pin {value!r}: expected sha256/BASE64 of the public key's SHA-256, "
            "as printed by `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der "
            "| openssl dgst -sha256 -binary | base64`"
        )
    return text


class ClientTlsConfig(_Model):
    """TLS settings for the gateway's connections to an upstream or to Redis.

    The server's certificate is verified against `ca` (the system roots when
    unset) and the host name, or `server_name` when set. `pins` adds a check
    of the certificate's public key. `client_certificate` is presented to
    servers that require one, so they can accept only the gateway.
    """

    ca: Path | None = None
    server_name: str | None = None
    pins: tuple[str, ...] = ()
    client_certificate: CertificateFiles | None = None

    @field_validator("ca")
    @classmethod
    def _check_ca(cls, value: Path | None) -> Path | None:
        return None if value is None else _check_pem_file(value, "CA file")

    @field_validator("server_name")
    @classmethod
    def _check_server_name(cls, value: str | None) -> str | None:
        return None if value is None else normalize_server_name(value)

    @field_validator("pins", mode="before")
    @classmethod
    def _parse_pins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of pins such as [sha256/BASE64]")
        return tuple(parse_pin(pin) for pin in value)
