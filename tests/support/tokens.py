"""Mint test tokens: RS256 with a generated key and its JWKS, and HS256 with a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://issuer.test"
AUDIENCE = "ringwall-test"
HMAC_SECRET = "s" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class RsaIssuer:
    def __init__(self, kid: str = "key-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
        }
        return json.dumps({"keys": [jwk]}).encode()

    def token(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        signing_input = _signing_input({"alg": "RS256", "kid": self.kid, **(header or {})}, claims)
        signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + b64(signature)


def hs256_token(
    secret: str = HMAC_SECRET, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    signing_input = _signing_input({"alg": "HS256", **(header or {})}, claims)
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + b64(signature)


def claims(subject: str = "user-1", ttl: float = 300, **extra: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": int(now),
        "exp": int(now + ttl),
        **extra,
    }


def _signing_input(header: dict[str, Any], payload: dict[str, Any]) -> bytes:
    return (b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())).encode()
