"""The gateway-signed token towards upstreams, and the JWK set that verifies it."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ringwall.config import parse_config
from ringwall.errors import ConfigError
from ringwall.gateway.auth.jwk import parse_jwks
from ringwall.gateway.auth.jws import StaticKeySet, verify_compact
from ringwall.gateway.auth.jwt import ClaimRules, validate_claims
from tests.support.backend_thread import running_backend
from tests.support.client import request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.tokens import AUDIENCE, HMAC_SECRET, ISSUER, claims, hs256_token


def write_key(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def config_text(backend_port: int, key_file: Path) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
auth:
  issuers:
    main:
      issuer: "{ISSUER}"
      hmac_secret: "{HMAC_SECRET}"
      algorithms: [HS256]
      audiences: [{AUDIENCE}]
  upstream_token:
    key_file: "{key_file}"
    audience: demo-backend
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend_port}"]
routes:
  - path: /api/echo
    upstream: app
    auth: {{methods: [jwt], optional: true}}
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayThread]:
    key_file = tmp_path / "gateway-key.pem"
    write_key(key_file)
    with (
        running_backend() as backend,
        running_gateway(config_text(backend.port, key_file), tmp_path) as server,
    ):
        yield server


def echo_headers(gateway: GatewayThread, extra: bytes) -> dict[str, str]:
    response = request(gateway.port, b"GET /api/echo HTTP/1.1\r\nHost: a\r\n%b\r\n" % extra)
    assert response.status == 200
    return {name.lower(): value for name, value in response.json()["headers"]}


def test_signed_token_verifies_with_gateway_jwks(gateway: GatewayThread) -> None:
    token = hs256_token(**claims("alice", roles=["customer"]))
    headers = echo_headers(
        gateway, b"Authorization: Bearer %b\r\nX-Ringwall-Token: forged\r\n" % token.encode()
    )
    upstream_token = headers["x-ringwall-token"]
    assert upstream_token != "forged"
    jwks = request(gateway.port, b"GET /.well-known/ringwall/jwks.json HTTP/1.1\r\nHost: a\r\n\r\n")
    assert jwks.status == 200
    keys = StaticKeySet(parse_jwks(jwks.body).keys)
    verified = verify_compact(upstream_token, keys, frozenset({"ES256"}))
    rules = ClaimRules(issuer="ringwall", audiences=frozenset({"demo-backend"}))
    token_claims = validate_claims(verified.payload, rules, time.time())
    assert token_claims.subject == "alice"
    assert token_claims.raw["roles"] == ("customer",)
    assert token_claims.raw["source_issuer"] == ISSUER


def test_no_token_for_anonymous(gateway: GatewayThread) -> None:
    headers = echo_headers(gateway, b"X-Ringwall-Token: forged\r\n")
    assert "x-ringwall-token" not in headers


def test_jwks_head_and_problem_free(gateway: GatewayThread) -> None:
    response = request(
        gateway.port, b"HEAD /.well-known/ringwall/jwks.json HTTP/1.1\r\nHost: a\r\n\r\n", b"HEAD"
    )
    assert response.status == 200
    assert response.body == b""
    assert response.header("Content-Type") == "application/json"


def test_invalid_key_file_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(9, bad))
    assert "auth.upstream_token.key_file" in str(info.value)
