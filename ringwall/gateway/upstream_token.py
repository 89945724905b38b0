"""A short-lived JWT signed by the gateway, so a backend can verify that a request passed it.

When configured, every authenticated request carries the identity as an
ES256 token in `header`, signed with the gateway's own key. The public key
is served as a JWK set at `jwks_path` on the gateway's listener, so a
backend can fetch it like any issuer's keys. A token is reused for the same
identity while more than half of its lifetime is left, because signing
costs tens of microseconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ringwall.config.model import UpstreamTokenConfig
from ringwall.errors import LocalResponse
from ringwall.gateway.identity import Identity

if TYPE_CHECKING:
    from ringwall.exchange import Exchange

_CACHE_SIZE = 10_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_signing_key(path: str) -> ec.EllipticCurvePrivateKey:
    """Load an EC P-256 private key from a PEM file; raise ValueError naming the problem."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot load the gateway signing key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"the gateway signing key {path} must be an EC P-256 private key")
    return key


def create_signing_key(path: Path) -> None:
    """Write a new EC P-256 private key to `path` (mode 0600) unless the file exists."""
    if path.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)


class UpstreamTokenSigner:
    def __init__(self, config: UpstreamTokenConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.header = config.header.encode("ascii")
        self._key = load_signing_key(config.key_file)
        self._clock = clock
        public = self._key.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = "ringwall-" + hashlib.sha256(der).hexdigest()[:16]
        numbers = public.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": self.kid,
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }
        self.jwks = json.dumps({"keys": [jwk]}).encode("ascii")
        self._cache: dict[tuple[object, ...], tuple[str, float]] = {}

    def token_for(self, identity: Identity) -> str:
        now = self._clock()
        key = (
            identity.subject,
            identity.method,
            identity.issuer,
            identity.key_id,
            identity.roles,
            identity.scopes,
        )
        cached = self._cache.get(key)
        if cached is not None and cached[1] - now > self.config.ttl / 2:
            return cached[0]
        token = self._sign(identity, now)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (token, now + self.config.ttl)
        return token

    def _sign(self, identity: Identity, now: float) -> str:
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        claims: dict[str, object] = {
            "iss": self.config.issuer,
            "aud": self.config.audience,
            "sub": identity.subject,
            "iat": int(now),
            "exp": int(now + self.config.ttl),
            "jti": secrets.token_urlsafe(12),
            "auth_method": identity.method,
            "roles": sorted(identity.roles),
            "scope": " ".join(sorted(identity.scopes)),
        }
        if identity.issuer:
            claims["source_issuer"] = identity.issuer
        if identity.key_id and identity.method == "api_key":
            claims["api_key_id"] = identity.key_id
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        der_signature = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_signature)
        return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class JwksEndpointLayer:
    """Serves GET and HEAD on the gateway's JWKS path itself, before routing."""

    name = "upstream-token"

    def __init__(self, signer: UpstreamTokenSigner) -> None:
        self.signer = signer
        self.path = signer.config.jwks_path

    def check_head(self, exchange: Exchange) -> None:
        if exchange.path == self.path and exchange.method in ("GET", "HEAD"):
            raise LocalResponse(
                200,
                self.signer.jwks,
                (("Content-Type", "application/json"), ("Cache-Control", "max-age=300")),
            )
