"""Tests for ringwall.gateway.auth.jwk: JWK set parsing and the strict encoding helpers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from ringwall.gateway.auth.jwk import (
    MAX_JSON_DEPTH,
    JsonInvalid,
    JwksInvalid,
    VerificationKey,
    decode_base64url,
    load_json_object,
    parse_jwks,
    verification_key,
)

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256_KEY = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def rsa_jwk(key: rsa.RSAPrivateKey = RSA_KEY, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": "rsa-1", "n": uint(numbers.n), "e": uint(numbers.e), **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey = P256_KEY, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
    return {
        "kty": "EC",
        "kid": "ec-1",
        "crv": crv,
        "x": b64(numbers.x.to_bytes(size, "big")),
        "y": b64(numbers.y.to_bytes(size, "big")),
        **extra,
    }


def oct_jwk(secret: bytes = b"s" * 32, **extra: Any) -> dict[str, Any]:
    return {"kty": "oct", "kid": "hmac-1", "k": b64(secret), **extra}


def document(*members: object) -> bytes:
    return json.dumps({"keys": list(members)}).encode()


def only_key(*members: object, allow_symmetric: bool = False) -> VerificationKey:
    key_set = parse_jwks(document(*members), allow_symmetric=allow_symmetric)
    assert key_set.skipped == ()
    assert len(key_set.keys) == 1
    return key_set.keys[0]


def skip_reason(member: object, allow_symmetric: bool = False) -> str:
    key_set = parse_jwks(document(member), allow_symmetric=allow_symmetric)
    assert key_set.keys == ()
    assert len(key_set.skipped) == 1
    return key_set.skipped[0].reason


# Key types and the algorithms they allow.


def test_rsa_key_allows_rsa_algorithms() -> None:
    key = only_key(rsa_jwk())
    assert key.kty == "RSA"
    assert key.kid == "rsa-1"
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key.algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


def test_alg_member_narrows_algorithms() -> None:
    assert only_key(rsa_jwk(alg="PS384")).algorithms == {"PS384"}


def test_rsa_key_below_2048_bits_skipped() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "1024 bits" in skip_reason(rsa_jwk(small))


def test_rsa_key_above_8192_bits_skipped() -> None:
    member = rsa_jwk(n=uint((1 << 8199) | 1))
    assert "8200 bits, above the maximum of 8192" in skip_reason(member)


@pytest.mark.parametrize(
    ("curve", "alg"),
    [(ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")],
)
def test_ec_curve_allows_one_algorithm(curve: ec.EllipticCurve, alg: str) -> None:
    key = only_key(ec_jwk(ec.generate_private_key(curve)))
    assert key.kty == "EC"
    assert key.algorithms == {alg}


def test_ec_alg_of_other_curve_skipped() -> None:
    assert "ES384" in skip_reason(ec_jwk(alg="ES384"))


def test_unregistered_alg_skipped() -> None:
    assert "ES521" in skip_reason(ec_jwk(alg="ES521"))


def test_ec_unsupported_curve_skipped() -> None:
    assert "secp256k1" in skip_reason(ec_jwk(crv="secp256k1"))


def test_ec_point_not_on_curve_rejected() -> None:
    member = ec_jwk()
    member["y"] = b64(bytes(31) + b"\x01")
    with pytest.raises(JwksInvalid, match="not on curve P-256"):
        parse_jwks(document(member))


def test_ec_short_coordinate_rejected() -> None:
    member = ec_jwk()
    member["x"] = b64(bytes(31))
    with pytest.raises(JwksInvalid, match="32 bytes"):
        parse_jwks(document(member))


def test_ed25519_key_allows_eddsa() -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    key = only_key({"kty": "OKP", "crv": "Ed25519", "x": b64(public)})
    assert key.kty == "OKP"
    assert key.kid is None
    assert key.algorithms == {"EdDSA"}


@pytest.mark.parametrize(
    ("crv", "public"),
    [
        ("Ed448", ed448.Ed448PrivateKey.generate().public_key().public_bytes_raw()),
        ("X25519", x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()),
    ],
)
def test_okp_other_curves_skipped(crv: str, public: bytes) -> None:
    assert crv in skip_reason({"kty": "OKP", "crv": crv, "x": b64(public)})


def test_oct_key_skipped_without_allow_symmetric() -> None:
    assert "local configuration" in skip_reason(oct_jwk())


@pytest.mark.parametrize(
    ("length", "algorithms"),
    [
        (32, {"HS256"}),
        (48, {"HS256", "HS384"}),
        (64, {"HS256", "HS384", "HS512"}),
    ],
)
def test_oct_key_algorithms_follow_length(length: int, algorithms: set[str]) -> None:
    key = only_key(oct_jwk(bytes(length)), allow_symmetric=True)
    assert key.kty == "oct"
    assert key.algorithms == algorithms


def test_oct_key_below_256_bits_skipped() -> None:
    assert "128 bits" in skip_reason(oct_jwk(bytes(16)), allow_symmetric=True)


def test_oct_and_asymmetric_keys_not_mixed() -> None:
    with pytest.raises(JwksInvalid, match="mixes"):
        parse_jwks(document(oct_jwk(), rsa_jwk()), allow_symmetric=True)


def test_hmac_secret_not_in_repr() -> None:
    key = only_key(oct_jwk(b"top-secret-value" * 2), allow_symmetric=True)
    assert "top-secret" not in repr(key)


def test_unsupported_kty_skipped() -> None:
    assert "kty" in skip_reason({"kty": "AKP", "kid": "pq-1"})


def test_skipped_key_records_index_and_kid() -> None:
    key_set = parse_jwks(document(rsa_jwk(), ec_jwk(use="enc")))
    assert [key.kid for key in key_set.keys] == ["rsa-1"]
    assert key_set.skipped[0].index == 1
    assert key_set.skipped[0].kid == "ec-1"


# Intended use.


def test_use_enc_skipped() -> None:
    assert "enc" in skip_reason(rsa_jwk(use="enc"))


def test_key_ops_without_verify_skipped() -> None:
    assert "verify" in skip_reason(rsa_jwk(key_ops=["encrypt"]))


def test_key_ops_with_verify_accepted() -> None:
    assert only_key(rsa_jwk(key_ops=["verify"])).kty == "RSA"


def test_key_ops_not_array_rejected() -> None:
    with pytest.raises(JwksInvalid, match="key_ops"):
        parse_jwks(document(rsa_jwk(key_ops="verify")))


# Private material.


def test_private_members_ignored() -> None:
    numbers = RSA_KEY.private_numbers()
    member = rsa_jwk(d=uint(numbers.d), p=uint(numbers.p), q=uint(numbers.q))
    key = only_key(member)
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert not isinstance(key.key, rsa.RSAPrivateKey)


# Malformed members and documents.


def test_bad_base64url_parameter_rejected() -> None:
    member = rsa_jwk()
    member["n"] = member["n"][:-1] + "+"
    with pytest.raises(JwksInvalid, match=r"keys\[0\]\.n is not valid base64url"):
        parse_jwks(document(member))


def test_padded_base64url_parameter_rejected() -> None:
    with pytest.raises(JwksInvalid, match="base64url"):
        parse_jwks(document(rsa_jwk(e="AQAB==")))


def test_kid_not_string_rejected() -> None:
    with pytest.raises(JwksInvalid, match="kid must be a string"):
        parse_jwks(document(rsa_jwk(kid=7)))


def test_kid_longer_than_cap_rejected() -> None:
    with pytest.raises(JwksInvalid, match="256"):
        parse_jwks(document(rsa_jwk(kid="k" * 257)))


def test_missing_kty_rejected() -> None:
    member = rsa_jwk()
    del member["kty"]
    with pytest.raises(JwksInvalid, match="no kty"):
        parse_jwks(document(member))


def test_missing_rsa_modulus_rejected() -> None:
    member = rsa_jwk()
    del member["n"]
    with pytest.raises(JwksInvalid, match="no n"):
        parse_jwks(document(member))


def test_document_over_size_cap_rejected() -> None:
    with pytest.raises(JwksInvalid, match="larger than 100 bytes"):
        parse_jwks(document(rsa_jwk()), max_size=100)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[]", "not a JSON object"),
        (b"{}", '"keys" array'),
        (b'{"keys": {}}', '"keys" array'),
        (b'{"keys": [1]}', "is not a JSON object"),
        (b"{", "not valid JSON"),
    ],
)
def test_malformed_document_rejected(raw: bytes, message: str) -> None:
    with pytest.raises(JwksInvalid, match=message):
        parse_jwks(raw)


def test_duplicate_member_rejected() -> None:
    with pytest.raises(JwksInvalid, match='duplicate member "keys"'):
        parse_jwks(b'{"keys": [], "keys": []}')


def test_duplicate_member_written_with_escape_rejected() -> None:
    raw = document(rsa_jwk())[:-1] + b', "k\\u0065ys": []}'
    with pytest.raises(JwksInvalid, match="duplicate member"):
        parse_jwks(raw)


# VerificationKey and verification_key.


def test_verification_key_rejects_foreign_algorithm() -> None:
    with pytest.raises(ValueError, match="HS256"):
        VerificationKey("k", RSA_KEY.public_key(), frozenset({"HS256"}))


def test_verification_key_needs_an_algorithm() -> None:
    with pytest.raises(ValueError, match="at least one"):
        VerificationKey("k", RSA_KEY.public_key(), frozenset())


def test_verification_key_helper_narrows_to_alg() -> None:
    key = verification_key(P256_KEY.public_key(), kid="ec", alg="ES256")
    assert key.algorithms == {"ES256"}


def test_verification_key_helper_rejects_unusable_alg() -> None:
    with pytest.raises(ValueError, match="ES384"):
        verification_key(P256_KEY.public_key(), alg="ES384")


# decode_base64url.


def test_base64url_decodes_unpadded() -> None:
    assert decode_base64url("Zm9vYg") == b"foob"
    assert decode_base64url("") == b""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Zm9vYg==", "alphabet"),
        ("Zm9v Yg", "alphabet"),
        ("Zm9v\nYg", "alphabet"),
        ("Zm9v+/", "alphabet"),
        ("Zm9vY", "impossible length"),
        ("Zm9vYh", "unused bits"),
    ],
)
def test_base64url_rejects_non_canonical(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_base64url(text)


# load_json_object.


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "out of range"),
        (b'{"a": "\\ud800"}', "unpaired surrogate"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'\xef\xbb\xbf{"a": 1}', "not valid JSON"),
        (b'{"a": ' + b"1" * 5000 + b"}", "number is too long"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
)
def test_strict_json_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(JsonInvalid, match=message):
        load_json_object(raw, "document")


def test_strict_json_depth_cap() -> None:
    nested = b'{"a": ' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH
    assert load_json_object(nested, "document")
    with pytest.raises(JsonInvalid, match=f"more than {MAX_JSON_DEPTH} levels"):
        load_json_object(b'{"a": ' + nested + b"}", "document")
