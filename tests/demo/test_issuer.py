"""Tests for ringwall.demo.issuer: key files, the JWK set, and tokens checked by our verifier."""

import base64
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ringwall.demo.issuer import (
    DEMO_AUDIENCE,
    DEMO_ISSUER,
    KEY_FILE_NAME,
    MAX_TTL,
    PREVIOUS_KEY_FILE_NAME,
    DemoIssuer,
    IssuerKeyMissing,
    IssuerStateError,
    load_issuer,
    load_or_create_issuer,
)
from ringwall.gateway.auth.jwk import parse_jwks
from ringwall.gateway.auth.jws import StaticKeySet, TokenInvalid, verify_compact
from ringwall.gateway.auth.jwt import ClaimRules, Claims, validate_claims

NOW = 1_800_000_000.0
KID = re.compile(r"demo-[0-9a-f]{16}")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def issuer(state_dir: Path) -> DemoIssuer:
    return load_or_create_issuer(state_dir)


def verify(jwks: bytes, token: str, now: float = NOW, audience: str = DEMO_AUDIENCE) -> Claims:
    """Check `token` the way the gateway does, against the keys in `jwks`."""
    key_set = parse_jwks(jwks)
    assert key_set.skipped == ()
    verified = verify_compact(token, StaticKeySet(key_set.keys), frozenset({"RS256"}))
    rules = ClaimRules(issuer=DEMO_ISSUER, audiences=frozenset({audience}))
    return validate_claims(verified.payload, rules, now)


def decode_segment(token: str, index: int) -> dict[str, object]:
    segment = token.split(".")[index]
    decoded = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(decoded, dict)
    return decoded


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Tokens


def test_token_verifies_with_all_claims(issuer: DemoIssuer) -> None:
    token = issuer.mint(
        "alice",
        roles=["customer", "support"],
        scopes=["accounts:read", "payments:write"],
        accounts=["acc-1001", "acc-1002"],
        now=NOW,
        jti="token-1",
    )

    claims = verify(issuer.jwks(), token)

    assert claims.issuer == DEMO_ISSUER
    assert claims.subject == "alice"
    assert claims.audience == (DEMO_AUDIENCE,)
    assert claims.jti == "token-1"
    assert claims.expires_at == NOW + 300
    assert claims.raw["iat"] == NOW
    assert claims.raw["nbf"] == NOW
    assert claims.raw["roles"] == ("customer", "support")
    assert claims.raw["scope"] == "accounts:read payments:write"
    assert claims.raw["accounts"] == ("acc-1001", "acc-1002")


def test_token_header(issuer: DemoIssuer) -> None:
    header = decode_segment(issuer.mint("alice", now=NOW), 0)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": issuer.kid}


def test_token_omits_empty_scope_and_accounts(issuer: DemoIssuer) -> None:
    claims = decode_segment(issuer.mint("alice", now=NOW), 1)
    assert claims["roles"] == []
    assert "scope" not in claims
    assert "accounts" not in claims
    assert isinstance(claims["iat"], int)


def test_token_jti_random_by_default(issuer: DemoIssuer) -> None:
    first = decode_segment(issuer.mint("alice", now=NOW), 1)["jti"]
    second = decode_segment(issuer.mint("alice", now=NOW), 1)["jti"]
    assert isinstance(first, str)
    assert len(first) >= 16
    assert first != second


def test_token_uses_current_time_by_default(issuer: DemoIssuer) -> None:
    before = int(time.time())
    claims = decode_segment(issuer.mint("alice"), 1)
    after = int(time.time())
    assert isinstance(claims["iat"], int)
    assert before <= claims["iat"] <= after
    assert claims["exp"] == claims["iat"] + 300


def test_token_fractional_now_rounds_down(issuer: DemoIssuer) -> None:
    claims = decode_segment(issuer.mint("alice", now=NOW + 0.9, ttl=60), 1)
    assert claims["iat"] == NOW
    assert claims["exp"] == NOW + 60


def test_token_custom_audience(issuer: DemoIssuer) -> None:
    token = issuer.mint("alice", audience="other-api", now=NOW)
    assert verify(issuer.jwks(), token, audience="other-api").audience == ("other-api",)
    with pytest.raises(TokenInvalid, match="aud claim does not contain"):
        verify(issuer.jwks(), token)


def test_token_rejected_after_expiry(issuer: DemoIssuer) -> None:
    token = issuer.mint("alice", ttl=60, now=NOW)
    verify(issuer.jwks(), token, now=NOW + 60)
    with pytest.raises(TokenInvalid, match="expired"):
        verify(issuer.jwks(), token, now=NOW + 60 + 30)


def test_negative_ttl_token_expired(issuer: DemoIssuer) -> None:
    token = issuer.mint("alice", ttl=-120, now=NOW)

    claims = decode_segment(token, 1)
    assert claims["exp"] == NOW - 120
    assert claims["iat"] == NOW - 120 - 60
    assert claims["nbf"] == claims["iat"]
    with pytest.raises(TokenInvalid, match="token has expired"):
        verify(issuer.jwks(), token)


def test_max_ttl_token_verifies(issuer: DemoIssuer) -> None:
    token = issuer.mint("alice", ttl=MAX_TTL, now=NOW)
    assert verify(issuer.jwks(), token).expires_at == NOW + MAX_TTL


def test_token_signature_checked(issuer: DemoIssuer) -> None:
    header, payload, signature = issuer.mint("alice", now=NOW).split(".")
    forged_claims = decode_segment(issuer.mint("mallory", now=NOW), 1)
    forged_payload = (
        base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    )
    assert payload != forged_payload
    with pytest.raises(TokenInvalid, match="signature verification failed"):
        verify(issuer.jwks(), f"{header}.{forged_payload}.{signature}")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"subject": ""}, "subject: must be a non-empty string"),
        ({"subject": "a\nb"}, "subject: contains control characters"),
        ({"subject": "a" * 256}, "subject: longer than 255"),
        ({"roles": ["admin", "admin"]}, "roles: duplicate value 'admin'"),
        ({"roles": "admin"}, "roles: expected a sequence of strings"),
        ({"roles": [""]}, "roles: invalid value ''"),
        ({"scopes": ["read write"]}, "scopes: invalid value 'read write'"),
        ({"scopes": ['a"b']}, "scopes: invalid value"),
        ({"accounts": ["x" * 129]}, "accounts: 'xxx"),
        ({"audience": ""}, "audience: must be a non-empty string"),
        ({"ttl": MAX_TTL + 1}, "ttl: 86401 is outside -86400 to 86400"),
        ({"ttl": -MAX_TTL - 1}, "ttl: -86401 is outside"),
        ({"ttl": 1.5}, "ttl: expected whole seconds"),
        ({"ttl": True}, "ttl: expected whole seconds"),
        ({"now": float("nan")}, "now: expected seconds since the Unix epoch"),
        ({"jti": ""}, "jti: must be a non-empty string"),
    ],
)
def test_mint_rejects_invalid_argument(
    issuer: DemoIssuer, arguments: dict[str, object], message: str
) -> None:
    subject = arguments.pop("subject", "alice")
    with pytest.raises(ValueError) as raised:
        issuer.mint(subject, **arguments)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


# JWK set


def test_jwks_publishes_public_key(issuer: DemoIssuer) -> None:
    document = json.loads(issuer.jwks())
    assert len(document["keys"]) == 1
    jwk = document["keys"][0]
    assert set(jwk) == {"kty", "kid", "alg", "use", "n", "e"}
    assert jwk["kty"] == "RSA"
    assert jwk["alg"] == "RS256"
    assert jwk["use"] == "sig"
    assert jwk["e"] == "AQAB"
    assert jwk["kid"] == issuer.kid
    assert KID.fullmatch(issuer.kid)


def test_jwks_key_matches_key_file(issuer: DemoIssuer, state_dir: Path) -> None:
    private_key = serialization.load_pem_private_key(
        (state_dir / KEY_FILE_NAME).read_bytes(), password=None
    )
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert private_key.key_size == 2048
    public_key = private_key.public_key()
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    (key,) = parse_jwks(issuer.jwks()).keys
    assert key.kid == "demo-" + hashlib.sha256(der).hexdigest()[:16]
    assert key.algorithms == frozenset({"RS256"})
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key.key.public_numbers() == public_key.public_numbers()


# Key files


def test_state_files_private(issuer: DemoIssuer, state_dir: Path) -> None:
    assert mode(state_dir) == 0o700
    assert mode(state_dir / KEY_FILE_NAME) == 0o600
    assert sorted(path.name for path in state_dir.iterdir()) == [KEY_FILE_NAME]


def test_state_files_private_despite_umask(state_dir: Path) -> None:
    previous_umask = os.umask(0o077 | 0o200)
    try:
        load_or_create_issuer(state_dir)
    finally:
        os.umask(previous_umask)
    assert mode(state_dir) == 0o700
    assert mode(state_dir / KEY_FILE_NAME) == 0o600


def test_existing_state_dir_kept(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    issuer = load_or_create_issuer(tmp_path)
    assert mode(tmp_path) == 0o755
    assert issuer.key_path == tmp_path / KEY_FILE_NAME


def test_state_reused_across_loads(issuer: DemoIssuer, state_dir: Path) -> None:
    key_bytes = (state_dir / KEY_FILE_NAME).read_bytes()
    token = issuer.mint("alice", now=NOW)

    again = load_or_create_issuer(state_dir)
    loaded = load_issuer(state_dir)

    assert again.kid == issuer.kid
    assert loaded.kid == issuer.kid
    assert (state_dir / KEY_FILE_NAME).read_bytes() == key_bytes
    assert verify(loaded.jwks(), token).subject == "alice"
    assert verify(issuer.jwks(), loaded.mint("bob", now=NOW)).subject == "bob"


def test_load_issuer_without_key(state_dir: Path) -> None:
    with pytest.raises(IssuerKeyMissing) as raised:
        load_issuer(state_dir)
    assert raised.value.key_path == state_dir / KEY_FILE_NAME
    assert str(state_dir / KEY_FILE_NAME) in str(raised.value)
    assert not state_dir.exists()


def test_state_dir_is_file(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text("not a directory")
    with pytest.raises(IssuerStateError, match="is not a directory"):
        load_or_create_issuer(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not a key", "not an unencrypted PEM private key"),
        (
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "not an RSA private key",
        ),
        (
            rsa.generate_private_key(65537, 1024).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "RSA key has 1024 bits, below the minimum of 2048",
        ),
    ],
)
def test_invalid_key_file(state_dir: Path, content: bytes, problem: str) -> None:
    state_dir.mkdir()
    key_path = state_dir / KEY_FILE_NAME
    key_path.write_bytes(content)
    with pytest.raises(IssuerStateError) as raised:
        load_or_create_issuer(state_dir)
    message = str(raised.value)
    assert str(key_path) in message
    assert problem in message
    assert "Delete the file" in message
    assert key_path.read_bytes() == content


def test_invalid_previous_key_file(issuer: DemoIssuer, state_dir: Path) -> None:
    (state_dir / PREVIOUS_KEY_FILE_NAME).write_text("garbage")
    with pytest.raises(IssuerStateError, match=PREVIOUS_KEY_FILE_NAME):
        load_issuer(state_dir)


# Rotation


def test_rotation_keeps_both_kids(issuer: DemoIssuer, state_dir: Path) -> None:
    old_kid = issuer.kid
    old_token = issuer.mint("alice", now=NOW)

    issuer.rotate()
    new_token = issuer.mint("bob", now=NOW)

    assert issuer.kid != old_kid
    assert issuer.previous_kid == old_kid
    assert decode_segment(new_token, 0)["kid"] == issuer.kid
    kids = [key["kid"] for key in json.loads(issuer.jwks())["keys"]]
    assert kids == [issuer.kid, old_kid]
    assert verify(issuer.jwks(), old_token).subject == "alice"
    assert verify(issuer.jwks(), new_token).subject == "bob"


def test_rotation_files(issuer: DemoIssuer, state_dir: Path) -> None:
    issuer.rotate()
    previous_path = state_dir / PREVIOUS_KEY_FILE_NAME
    assert mode(state_dir / KEY_FILE_NAME) == 0o600
    assert mode(previous_path) == 0o600
    assert b"PRIVATE KEY" not in previous_path.read_bytes()
    assert sorted(path.name for path in state_dir.iterdir()) == sorted(
        [KEY_FILE_NAME, PREVIOUS_KEY_FILE_NAME]
    )


def test_rotation_seen_by_new_load(issuer: DemoIssuer, state_dir: Path) -> None:
    stale = load_issuer(state_dir)
    issuer.rotate()

    loaded = load_issuer(state_dir)

    assert loaded.kid == issuer.kid
    assert loaded.previous_kid == stale.kid
    assert loaded.jwks() == issuer.jwks()


def test_second_rotation_drops_oldest_key(issuer: DemoIssuer) -> None:
    first_kid = issuer.kid
    first_token = issuer.mint("alice", now=NOW)
    issuer.rotate()
    second_kid = issuer.kid
    issuer.rotate()

    kids = [key["kid"] for key in json.loads(issuer.jwks())["keys"]]
    assert kids == [issuer.kid, second_kid]
    with pytest.raises(TokenInvalid, match="no key found for kid"):
        verify(issuer.jwks(), first_token)
    assert first_kid not in kids


def test_stale_instance_rotates_file_key(issuer: DemoIssuer, state_dir: Path) -> None:
    stale = load_issuer(state_dir)
    issuer.rotate()
    rotated_kid = issuer.kid

    stale.rotate()

    assert stale.previous_kid == rotated_kid
    assert load_issuer(state_dir).kid == stale.kid


def test_duplicate_previous_key_published_once(issuer: DemoIssuer, state_dir: Path) -> None:
    public_pem = issuer.public_keys()[0].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (state_dir / PREVIOUS_KEY_FILE_NAME).write_bytes(public_pem)

    loaded = load_issuer(state_dir)

    assert loaded.previous_kid == issuer.kid
    assert [key["kid"] for key in json.loads(loaded.jwks())["keys"]] == [issuer.kid]
