"""The result of a client connection's TLS handshake, as the request layers read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HandshakeInfo:
    """The outcome of a finished handshake on an HTTPS connection.

    `policy` is the index of the `server.tls.sni` entry chosen by the server
    name, or -1 for the listener's own settings. `client_certificate` is the
    DER of the client's leaf certificate, present only when the handshake
    verified it against the policy's CA bundle.
    """

    server_name: str | None
    policy: int
    protocol: str
    cipher: str
    alpn: str | None
    resumed: bool
    client_certificate: bytes | None = None
