"""Tests for ringwall.gateway.auth.jws: compact JWS verification, one test per rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ringwall.gateway.auth.jwk import VerificationKey, verification_key
from ringwall.gateway.auth.jws import (
    CURVE_ORDERS,
    MAX_TOKEN_SIZE,
    StaticKeySet,
    TokenInvalid,
    VerifiedJws,
    verify_compact,
)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | bytes

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEYS = {
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "ES512": ec.generate_private_key(ec.SECP521R1()),
}
ED_KEY = ed25519.Ed25519PrivateKey.generate()
HMAC_SECRET = bytes(range(64))
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
ALL_ALGS = RSA_ALGS | set(EC_KEYS) | {"EdDSA", "HS256", "HS384", "HS512"}
PAYLOAD = b'{"sub":"alice"}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hash_for(alg: str) -> hashes.HashAlgorithm:
    return {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[-3:]]


def private_key_for(alg: str) -> PrivateKey:
    if alg.startswith(("RS", "PS")):
        return RSA_KEY
    if alg.startswith("ES"):
        return EC_KEYS[alg]
    if alg == "EdDSA":
        return ED_KEY
    return HMAC_SECRET


def public_key_for(alg: str, kid: str | None = "k1") -> VerificationKey:
    key = private_key_for(alg)
    material = key if isinstance(key, bytes) else key.public_key()
    return verification_key(material, kid=kid)


def raw_signature(alg: str, data: bytes, *, high_s: bool = False) -> bytes:
    key = private_key_for(alg)
    if isinstance(key, bytes):
        return hmac.new(key, data, getattr(hashlib, f"sha{alg[2:]}")).digest()
    if isinstance(key, rsa.RSAPrivateKey):
        hash_algorithm = hash_for(alg)
        scheme: padding.AsymmetricPadding = padding.PKCS1v15()
        if alg.startswith("PS"):
            scheme = padding.PSS(padding.MGF1(hash_algorithm), hash_algorithm.digest_size)
        return key.sign(data, scheme, hash_algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ecdsa_signature(key, alg, data, high_s=high_s)
    return key.sign(data)


def ecdsa_signature(
    key: ec.EllipticCurvePrivateKey, alg: str, data: bytes, *, high_s: bool
) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_for(alg))))
    order = CURVE_ORDERS[key.curve.name]
    low_s = min(s, order - s)
    s = order - low_s if high_s else low_s
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def encode_header(header: dict[str, Any] | bytes) -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return b64(raw)


def make_token(
    alg: str = "ES256",
    *,
    header: dict[str, Any] | bytes | None = None,
    payload: bytes = PAYLOAD,
    high_s: bool = False,
) -> str:
    header_segment = encode_header({"alg": alg, "kid": "k1"} if header is None else header)
    signing_input = f"{header_segment}.{b64(payload)}"
    signature = raw_signature(alg, signing_input.encode(), high_s=high_s)
    return f"{signing_input}.{b64(signature)}"


def with_signature(token: str, signature: bytes) -> str:
    return token.rsplit(".", 1)[0] + "." + b64(signature)


def verify(token: str | bytes, alg: str = "ES256", **options: Any) -> VerifiedJws:
    keys = options.pop("keys", StaticKeySet([public_key_for(alg)]))
    allowed = options.pop("allowed_algs", frozenset({alg}))
    return verify_compact(token, keys, allowed, **options)


def rejection(token: str | bytes, alg: str = "ES256", **options: Any) -> str:
    with pytest.raises(TokenInvalid) as caught:
        verify(token, alg, **options)
    assert caught.value.error == "invalid_token"
    return caught.value.reason


# Valid tokens.


@pytest.mark.parametrize("alg", sorted(ALL_ALGS))
def test_valid_token_verifies(alg: str) -> None:
    verified = verify(make_token(alg), alg)
    assert verified.alg == alg
    assert verified.kid == "k1"
    assert verified.payload == PAYLOAD
    assert verified.header == {"alg": alg, "kid": "k1"}


def test_bytes_token_verifies() -> None:
    assert verify(make_token().encode()).payload == PAYLOAD


def test_verified_header_read_only() -> None:
    header = verify(make_token()).header
    with pytest.raises(TypeError):
        header["alg"] = "none"  # type: ignore[index]


# Size and shape.


def test_size_cap_checked_before_decoding() -> None:
    reason = rejection("!" * (MAX_TOKEN_SIZE + 1))
    assert reason == f"token is longer than {MAX_TOKEN_SIZE} bytes"


def test_custom_size_cap() -> None:
    token = make_token()
    assert "longer than 10 bytes" in rejection(token, max_size=10)


@pytest.mark.parametrize("count", [1, 2, 4, 6])
def test_segment_count_other_than_three_rejected(count: int) -> None:
    assert f"has {count} segments" in rejection(".".join(["e30"] * count))


def test_jwe_rejected() -> None:
    assert "JWE" in rejection("e30.a.b.c.d")


def test_json_serialization_rejected() -> None:
    token = json.dumps({"payload": "e30", "signatures": []})
    assert "JSON serialization" in rejection(token)


def test_non_ascii_token_rejected() -> None:
    assert "non-ASCII" in rejection(make_token() + "é")
    assert "non-ASCII" in rejection(make_token().encode() + b"\xff")


# Base64url.


@pytest.mark.parametrize(
    ("segment_index", "name"), [(0, "header"), (1, "payload"), (2, "signature")]
)
@pytest.mark.parametrize("damage", ["=", " ", "\n", "+", "/", "?"])
def test_non_base64url_segment_rejected(segment_index: int, name: str, damage: str) -> None:
    segments = make_token().split(".")
    segments[segment_index] += damage
    reason = rejection(".".join(segments))
    assert reason.startswith(f"{name} is not valid base64url")


def test_non_canonical_base64url_rejected() -> None:
    segments = make_token().split(".")
    segments[1] = "AB"  # one byte whose unused low bits are not zero
    assert "unused bits" in rejection(".".join(segments))


def test_empty_signature_rejected() -> None:
    token = make_token().rsplit(".", 1)[0] + "."
    assert rejection(token) == "signature is missing"


# Header.


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"not json", "not valid JSON"),
        (b'["ES256"]', "not a JSON object"),
        (b'{"alg": "ES256", "alg": "ES256"}', 'duplicate member "alg"'),
        (b'{"alg": "ES256", "\\u0061lg": "ES256"}', 'duplicate member "alg"'),
        (b'{"alg": "ES256", "x": NaN}', "NaN"),
        (b'{"alg": "ES256", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply"),
    ],
)
def test_header_not_strict_json_object_rejected(raw: bytes, message: str) -> None:
    reason = rejection(make_token(header=raw))
    assert reason.startswith("header")
    assert message in reason


def test_header_without_alg_rejected() -> None:
    assert rejection(make_token(header={"kid": "k1"})) == "header has no alg"


def test_header_alg_not_string_rejected() -> None:
    assert "alg must be a string" in rejection(make_token(header={"alg": ["ES256"]}))


@pytest.mark.parametrize("alg", ["none", "NONE", "None", "nOnE"])
def test_alg_none_rejected(alg: str) -> None:
    token = b64(json.dumps({"alg": alg}).encode()) + "." + b64(PAYLOAD) + "."
    reason = rejection(token, allowed_algs=frozenset({alg, "ES256"}))
    assert "alg none" in reason


def test_alg_outside_issuer_list_rejected() -> None:
    token = make_token("ES384")
    keys = StaticKeySet([public_key_for("ES384")])
    reason = rejection(token, keys=keys, allowed_algs=frozenset({"ES256"}))
    assert reason == 'alg "ES384" is not allowed for this issuer'


@pytest.mark.parametrize("public_alg", ["RS256", "ES256", "EdDSA"])
def test_hmac_token_with_public_key_rejected(public_alg: str) -> None:
    # The classic confusion attack: the public key's bytes used as an HMAC secret.
    public_key = public_key_for(public_alg).key
    assert not isinstance(public_key, bytes)
    secret = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header_segment = encode_header({"alg": "HS256", "kid": "k1"})
    signing_input = f"{header_segment}.{b64(PAYLOAD)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    reason = rejection(token, public_alg, allowed_algs=frozenset({public_alg, "HS256"}))
    assert reason == "no key for this token allows alg HS256"


def test_alg_outside_key_algorithms_rejected() -> None:
    keys = StaticKeySet([verification_key(RSA_KEY.public_key(), kid="k1", alg="RS256")])
    token = make_token("PS256")
    reason = rejection(token, keys=keys, allowed_algs=frozenset({"RS256", "PS256"}))
    assert reason == "no key for this token allows alg PS256"


# kid and key selection.


def test_kid_not_string_rejected() -> None:
    token = make_token(header={"alg": "ES256", "kid": 1})
    assert rejection(token) == "header kid must be a string"


def test_kid_over_length_cap_rejected() -> None:
    token = make_token(header={"alg": "ES256", "kid": "k" * 257})
    assert "longer than 256" in rejection(token)


def test_unknown_kid_rejected() -> None:
    token = make_token(header={"alg": "ES256", "kid": "other"})
    assert rejection(token) == 'no key found for kid "other"'


def test_kid_selects_matching_key() -> None:
    other = verification_key(ec.generate_private_key(ec.SECP256R1()).public_key(), kid="k0")
    keys = StaticKeySet([other, public_key_for("ES256")])
    assert verify(make_token(), keys=keys).kid == "k1"


def test_no_kid_single_key_verifies() -> None:
    token = make_token(header={"alg": "ES256"})
    assert verify(token).kid is None


def test_no_kid_several_keys_rejected() -> None:
    other = verification_key(ec.generate_private_key(ec.SECP256R1()).public_key(), kid="k0")
    keys = StaticKeySet([other, public_key_for("ES256")])
    reason = rejection(make_token(header={"alg": "ES256"}), keys=keys)
    assert reason == "token has no kid and 2 keys allow alg ES256"


def test_empty_key_set_rejected() -> None:
    token = make_token(header={"alg": "ES256"})
    reason = rejection(token, keys=StaticKeySet([]))
    assert reason == "no verification key is configured for this issuer"


def test_lookup_ignoring_kid_still_checked() -> None:
    class LooseLookup:
        def find(self, kid: str | None, alg: str) -> list[VerificationKey]:
            return [public_key_for("ES256", kid="someone-else")]

    assert "no key found" in rejection(make_token(), keys=LooseLookup())


def test_static_key_set_rejects_mixed_key_types() -> None:
    with pytest.raises(ValueError, match="cannot mix"):
        StaticKeySet([public_key_for("HS256"), public_key_for("ES256")])


def test_long_kid_not_echoed_in_full() -> None:
    kid = "x" * 200
    reason = rejection(make_token(header={"alg": "ES256", "kid": kid}))
    assert kid not in reason
    assert len(reason) < 100


# Key source headers, crit and b64.


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_key_source_header_rejected(name: str) -> None:
    token = make_token(header={"alg": "ES256", "kid": "k1", name: "value"})
    assert rejection(token).startswith(f"header parameter {name} is not accepted")


def test_x5t_header_ignored() -> None:
    token = make_token(header={"alg": "ES256", "kid": "k1", "x5t": "AAAA"})
    assert verify(token).alg == "ES256"


@pytest.mark.parametrize("crit", ["exp", [], [1], ["exp", "exp"]])
def test_malformed_crit_rejected(crit: object) -> None:
    token = make_token(header={"alg": "ES256", "kid": "k1", "crit": crit, "exp": 1})
    assert "crit must be a non-empty array" in rejection(token)


@pytest.mark.parametrize("name", ["exp", "b64"])
def test_unsupported_crit_rejected(name: str) -> None:
    token = make_token(header={"alg": "ES256", "kid": "k1", "crit": [name], name: True})
    assert rejection(token) == f'critical header parameter "{name}" is not supported'


def test_b64_false_rejected() -> None:
    token = make_token(header={"alg": "ES256", "kid": "k1", "b64": False})
    assert "unencoded payloads" in rejection(token)


# Signatures.


@pytest.mark.parametrize("alg", sorted(ALL_ALGS))
def test_modified_payload_rejected(alg: str) -> None:
    header_segment, _, signature = make_token(alg).split(".")
    token = f"{header_segment}.{b64(b'{}')}.{signature}"
    assert rejection(token, alg) == "signature verification failed"


def test_hmac_truncated_signature_rejected() -> None:
    token = make_token("HS256")
    signature = raw_signature("HS256", token.rsplit(".", 1)[0].encode())
    assert rejection(with_signature(token, signature[:16]), "HS256") == (
        "signature verification failed"
    )


def test_rsa_signature_length_checked() -> None:
    token = make_token("RS256")
    signature = raw_signature("RS256", token.rsplit(".", 1)[0].encode())
    reason = rejection(with_signature(token, b"\x00" + signature), "RS256")
    assert reason == "RS256 signature must be 256 bytes"


def test_pkcs1_signature_under_pss_alg_rejected() -> None:
    pss_header = encode_header({"alg": "PS256", "kid": "k1"})
    signing_input = f"{pss_header}.{b64(PAYLOAD)}"
    signature = RSA_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input}.{b64(signature)}"
    assert rejection(token, "PS256") == "signature verification failed"


def test_pss_other_salt_length_rejected() -> None:
    signing_input = f"{encode_header({'alg': 'PS256', 'kid': 'k1'})}.{b64(PAYLOAD)}"
    scheme = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH)
    signature = RSA_KEY.sign(signing_input.encode(), scheme, hashes.SHA256())
    token = f"{signing_input}.{b64(signature)}"
    assert rejection(token, "PS256") == "signature verification failed"


def test_ecdsa_der_signature_rejected() -> None:
    token = make_token()
    der = EC_KEYS["ES256"].sign(token.rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))
    reason = rejection(with_signature(token, der))
    assert reason == "ES256 signature must be 64 bytes (R || S)"


def test_ecdsa_high_s_accepted() -> None:
    # Issuers using OpenSSL produce high-s signatures for about half of their tokens.
    assert verify(make_token(high_s=True)).alg == "ES256"


def test_ecdsa_high_s_signature_is_otherwise_valid() -> None:
    # Guards the test above: the high-s form is a real signature, not garbage.
    token = make_token(high_s=True)
    signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    public_key = EC_KEYS["ES256"].public_key()
    der = encode_dss_signature(r, s)
    public_key.verify(der, token.rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 1), (1, 0), (CURVE_ORDERS["secp256r1"], 1), (1, CURVE_ORDERS["secp256r1"])],
)
def test_ecdsa_out_of_range_rejected(r: int, s: int) -> None:
    token = with_signature(make_token(), r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    assert "outside 1 to n - 1" in rejection(token)


def test_eddsa_wrong_length_rejected() -> None:
    token = with_signature(make_token("EdDSA"), bytes(63))
    assert rejection(token, "EdDSA") == "EdDSA signature must be 64 bytes"
