"""The verified identity of a caller, and the header fields that carry it upstream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringwall.config.model import OwnerRule
    from ringwall.tls.client_identity import ClientCertificate

# Bytes a header value may carry as they are: visible ASCII and space. Any
# other byte (CR, LF, NUL, other controls, non-ASCII) is percent-encoded, so
# a claim value can never split or end a header line towards the upstream.
_SAFE = frozenset(range(0x20, 0x7F)) - {ord("%")}


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller of a request, as proven to the authentication layer.

    `method` is "jwt", "api_key" or "mtls". `key_id` is the API key id, the
    token's kid, or the client certificate's SHA-256 fingerprint in hex.
    `issuer` is the token's iss, or the certificate issuer's DN. `claims`
    are the token's claims, for an API key the owner as `sub`, and for a
    certificate `sub` and its names under `cert` (see
    ringwall.gateway.auth.mtls).
    """

    subject: str
    method: str
    issuer: str | None
    key_id: str | None
    roles: frozenset[str]
    scopes: frozenset[str]
    claims: Mapping[str, object]
    expires_at: float | None = None
    jti: str | None = None
    # The verified client certificate, for method "mtls".
    certificate: ClientCertificate | None = field(default=None, compare=False)
    # The encoded X-Ringwall-* lines, made once: an identity from the token
    # cache serves many requests.
    header_block: bytes = field(default=b"", compare=False)
    # Subject, method, key id and issuer, as the audit record lists them.
    audit_fields: tuple[str | None, ...] = field(default=(), compare=False)
    # Role and scope checks already made for this identity, by rule list (see
    # ringwall.gateway.authorization). An identity lives in one runtime's token cache.
    decisions: dict[tuple[int, str], tuple[object, str, tuple[OwnerRule, ...]]] = field(
        default_factory=dict, compare=False
    )

    def __post_init__(self) -> None:
        block = b"".join(b"%b: %b\r\n" % line for line in identity_headers(self))
        object.__setattr__(self, "header_block", block)
        fields = (self.subject, self.method, self.key_id, self.issuer)
        object.__setattr__(self, "audit_fields", fields)


def encode_header_value(text: str, separator: bytes = b"") -> bytes:
    """Encode text for a header value: UTF-8, with unsafe bytes (and `separator`) as %XX."""
    raw = text.encode("utf-8", "surrogatepass")
    safe = _SAFE - set(separator) if separator else _SAFE
    if all(byte in safe for byte in raw):
        return raw
    return b"".join(bytes([byte]) if byte in safe else b"%%%02X" % byte for byte in raw)


def identity_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    """Return the fields that tell the upstream who the caller is.

    Client-sent fields with these names are removed before forwarding (every
    `X-Ringwall-*` field is gateway-owned), so an upstream can trust them.
    """
    fields = [
        (b"X-Ringwall-Subject", encode_header_value(identity.subject)),
        (b"X-Ringwall-Auth-Method", identity.method.encode("ascii")),
    ]
    if identity.issuer:
        fields.append((b"X-Ringwall-Issuer", encode_header_value(identity.issuer)))
    if identity.key_id:
        fields.append((b"X-Ringwall-Key-Id", encode_header_value(identity.key_id)))
    if identity.certificate is not None:
        subject = encode_header_value(identity.certificate.subject)
        fields.append((b"X-Ringwall-Client-Cert-Subject", subject))
    # Each role or scope is encoded on its own, with the list separator
    # encoded too, so a role named "x,admin" cannot read as two roles.
    if identity.roles:
        roles = b",".join(encode_header_value(role, b",") for role in sorted(identity.roles))
        fields.append((b"X-Ringwall-Roles", roles))
    if identity.scopes:
        scopes = b" ".join(encode_header_value(scope, b" ") for scope in sorted(identity.scopes))
        fields.append((b"X-Ringwall-Scopes", scopes))
    return fields


def claim_at(claims: Mapping[str, object], path: str) -> object:
    """Return the claim at a dotted path such as "realm_access.roles", or None."""
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def claim_strings(claims: Mapping[str, object], paths: tuple[str, ...]) -> frozenset[str]:
    """Collect strings from claims that are lists of strings or space-separated strings."""
    found: set[str] = set()
    for path in paths:
        value = claim_at(claims, path)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list | tuple):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found)
