"""Set up the `ringwall-auth` system: an RS256 issuer, its JWKS file, a token and a config.

The config has one issuer whose keys come from a file in the harness temp dir,
and one route `/` that requires a JWT with role `customer` and scope
`orders:read`. The harness sends the same token on every request, so after the
first request the gateway finds it in its token cache and skips the signature
check: the warm-cache case.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Claim values only: the gateway reads the keys from a file and contacts no issuer.
ISSUER = "ringwall-bench-issuer"
AUDIENCE = "ringwall-bench-api"
KEY_ID = "bench-rs256"
ALGORITHM = "RS256"
RSA_KEY_BITS = 2048
REQUIRED_ROLE = "customer"
REQUIRED_SCOPE = "orders:read"
TOKEN_LIFETIME_S = 3600
BEARER_PLACEHOLDER = "Bearer [RS256 token]"


@dataclass(frozen=True)
class AuthChain:
    """The generated files and tokens of one `ringwall-auth` run."""

    config_path: Path
    token: str
    # Signed by the same key, without role `customer`, so the gateway must respond 403.
    token_without_role: str
    claims: Mapping[str, Any]
    audit_log: Path | None
    audit_note: str

    def setup(self) -> dict[str, Any]:
        """Describe the setup for the results JSON, without the tokens themselves."""
        return {
            "config": str(self.config_path),
            "algorithm": ALGORITHM,
            "rsa_key_bits": RSA_KEY_BITS,
            "token_claims": dict(self.claims),
            "token_cache": "warm: one token on every request",
            "audit_log": str(self.audit_log) if self.audit_log else None,
            "audit_note": self.audit_note,
        }


def prepare_auth_chain(prefix: Path) -> AuthChain:
    """Generate an RSA key, write PREFIX/jwks.json and PREFIX/ringwall-auth.yaml, mint tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    jwks_path = prefix / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [public_jwk(key.public_key(), KEY_ID)]}))

    now = int(time.time())
    claims = token_claims(now, secrets.token_hex(16), roles=[REQUIRED_ROLE])
    other_claims = token_claims(now, secrets.token_hex(16), roles=["viewer"])

    audit_log = prefix / "audit.jsonl"
    audit, audit_note = audit_setting(audit_log)
    config_path = prefix / "ringwall-auth.yaml"
    config_path.write_text(yaml.safe_dump(auth_config(jwks_path, audit), sort_keys=False))
    return AuthChain(
        config_path=config_path,
        token=sign_rs256(key, KEY_ID, claims),
        token_without_role=sign_rs256(key, KEY_ID, other_claims),
        claims=claims,
        audit_log=audit_log if audit is not None else None,
        audit_note=audit_note,
    )


def token_claims(now: int, jwt_id: str, roles: list[str]) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench-user-1",
        "roles": roles,
        "scope": REQUIRED_SCOPE,
        "iat": now,
        "exp": now + TOKEN_LIFETIME_S,
        "jti": jwt_id,
    }


def auth_config(jwks_path: Path, audit: object | None) -> dict[str, Any]:
    """Return the gateway config. `audit` is the `logging.audit` value, or None to leave it out.

    The upstream target is `${UPSTREAM_URL}`, as in examples/minimal.yaml.
    """
    config: dict[str, Any] = {}
    if audit is not None:
        config["logging"] = {"audit": audit}
    config["auth"] = {
        "issuers": {
            "bench": {
                "issuer": ISSUER,
                "jwks": f"file:{jwks_path}",
                "algorithms": [ALGORITHM],
                "audiences": [AUDIENCE],
            }
        }
    }
    config["upstreams"] = {"app": {"targets": ["${UPSTREAM_URL}"]}}
    config["routes"] = [
        {
            "name": "all",
            "path": "/",
            "upstream": "app",
            "auth": "jwt",
            "authorize": [{"roles": [REQUIRED_ROLE], "scopes": [REQUIRED_SCOPE]}],
        }
    ]
    return config


def audit_setting(destination: Path) -> tuple[object | None, str]:
    """Return the `logging.audit` value that writes to `destination`, and a note for the report.

    The value is None when this Ringwall's config schema has no `logging.audit`.
    """
    try:
        from ringwall.config.model import LogConfig
    except ImportError as error:
        return None, f"off: ringwall.config.model cannot be imported ({error})"

    field = LogConfig.model_fields.get("audit")
    if field is None:
        return None, "off: this Ringwall's LogConfig has no audit field"
    for candidate in (field.annotation, *get_args(field.annotation)):
        if candidate is str:
            return str(destination), f"on: {destination}"
        fields = getattr(candidate, "model_fields", {})
        if "destination" in fields:
            value: dict[str, object] = {"destination": str(destination)}
            if "enabled" in fields:
                value["enabled"] = True
            return value, f"on: {destination}"
    return None, f"off: unknown type of logging.audit: {field.annotation}"


def public_jwk(key: rsa.RSAPublicKey, kid: str) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "RSA",
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
        "n": b64url_uint(numbers.n),
        "e": b64url_uint(numbers.e),
    }


def sign_rs256(key: rsa.RSAPrivateKey, kid: str, claims: Mapping[str, Any]) -> str:
    """Return a compact JWS of `claims`, signed with RSASSA-PKCS1-v1_5 and SHA-256."""
    header = {"alg": ALGORITHM, "kid": kid, "typ": "JWT"}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def b64url(data: bytes) -> str:
    """Return base64url without padding, as JWS and JWK use (RFC 7515, section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_uint(value: int) -> str:
    """Return a positive integer as big-endian bytes in base64url, without leading zero bytes."""
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def bearer_headers(base: Mapping[str, str], token: str) -> dict[str, str]:
    return {**base, "Authorization": f"Bearer {token}"}


def redact_authorization(command: list[str]) -> list[str]:
    """Return `command` with the value of each `Authorization:` header argument replaced."""
    return [
        f"Authorization: {BEARER_PLACEHOLDER}"
        if argument.lower().startswith("authorization:")
        else argument
        for argument in command
    ]
