"""Verify JWS compact serialization (RFC 7515) with keys from our own configuration.

`verify_compact` checks these rules and raises `TokenInvalid` for the first
failure it finds. The whole header is checked before the payload and the
signature are decoded.

1. The token is at most `max_size` bytes, checked before any decoding.
2. It is ASCII text of exactly three segments. JWE (five segments) and the
   JSON serialization are rejected.
3. Each segment is unpadded, canonical base64url (see `decode_base64url`).
4. The header is a strict JSON object (see `load_json_object`) whose `alg`
   is a string.
5. `alg` is not "none" in any case, and is in the issuer's allowed list.
6. `kid`, when present, is a string of at most 256 characters.
7. `crit`, when present, is a non-empty array of distinct strings. We
   implement no extension, so any `crit` is then rejected. `b64` other
   than true (RFC 7797 unencoded payload) is rejected.
8. `jwk`, `jku`, `x5u` and `x5c` are rejected, because a key or key URL
   chosen by the token's author proves nothing. `x5t` and `x5t#S256` are
   ignored. No header parameter is ever used to find or build a key.
9. The key comes from `KeyLookup.find` by `kid`. Without a `kid`, exactly
   one key must allow `alg`. The key must list `alg` among the algorithms
   derived from its own type and size, so an HS256 header cannot make an
   RSA or EC public key act as an HMAC secret.
10. The signature verifies. HMAC is compared with `hmac.compare_digest`.
    RSASSA-PKCS1-v1_5 and Ed25519 are checked by pyca/cryptography, and so
    is RSASSA-PSS, with MGF1 over the same hash and a salt as long as the
    hash. ECDSA takes raw R || S of exactly twice the coordinate size with
    0 < r, s < n. A high s is accepted (see `_verify_ecdsa`), so ECDSA
    signatures are malleable and nothing may be keyed on the signature.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ringwall.errors import RingwallError, excerpt
from ringwall.gateway.auth.jwk import (
    MAX_KID_LENGTH,
    JsonInvalid,
    VerificationKey,
    decode_base64url,
    load_json_object,
)

MAX_TOKEN_SIZE = 8192
# Header parameters that would let the token's author pick the verification key.
KEY_SOURCE_HEADERS = ("jwk", "jku", "x5u", "x5c")

# Group order n of each supported curve (SEC 2 version 2.0, section 2.4).
CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "secp521r1": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
        "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


class TokenInvalid(RingwallError):
    """A bearer token that failed verification or claim validation.

    `reason` is written by Ringwall and quotes token content only through a
    short escaped `excerpt()`, so it is safe to log. `error` is the RFC 6750
    error code for the WWW-Authenticate challenge.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = "invalid_token"


class KeyLookup(Protocol):
    """Source of verification keys for one issuer, such as a cached JWK set."""

    def find(self, kid: str | None, alg: str) -> Sequence[VerificationKey]:
        """Return the keys whose kid equals `kid`, or every key when `kid` is None.

        `alg` is the token's algorithm, given so that a cache can decide to
        refetch. Filtering by it is optional, because `verify_compact`
        checks each key's algorithms itself.
        """
        ...


class StaticKeySet:
    """A fixed `KeyLookup`, for keys from local configuration and for tests."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self.keys = tuple(keys)
        symmetric = sum(1 for key in self.keys if key.kty == "oct")
        if 0 < symmetric < len(self.keys):
            raise ValueError("a key set cannot mix oct (HMAC) keys with asymmetric keys")

    def find(self, kid: str | None, alg: str) -> list[VerificationKey]:
        if kid is None:
            return list(self.keys)
        return [key for key in self.keys if key.kid == kid]


@dataclass(frozen=True, slots=True)
class VerifiedJws:
    """A JWS whose signature verified: its protected header, payload and algorithm."""

    header: Mapping[str, object]
    payload: bytes
    alg: str
    kid: str | None


def verify_compact(
    token: bytes | str,
    keys: KeyLookup,
    allowed_algs: frozenset[str],
    max_size: int = MAX_TOKEN_SIZE,
) -> VerifiedJws:
    """Verify a compact-serialized JWS and return its header and payload.

    `allowed_algs` is the issuer's configured list. Raises `TokenInvalid`.
    """
    text = _token_text(token, max_size)
    header_segment, payload_segment, signature_segment = _split_compact(text)
    header = _parse_header(header_segment)
    alg = _check_alg(header, allowed_algs)
    kid = _check_kid(header)
    _check_crit(header)
    _check_key_source_headers(header)
    _check_b64(header)

    payload = _decode_segment(payload_segment, "payload")
    signature = _decode_segment(signature_segment, "signature")
    if not signature:
        raise TokenInvalid("signature is missing")
    key = _select_key(keys, kid, alg)
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    _verify_signature(key, alg, signing_input, signature)
    return VerifiedJws(MappingProxyType(header), payload, alg, kid)


def _token_text(token: bytes | str, max_size: int) -> str:
    if len(token) > max_size:
        raise TokenInvalid(f"token is longer than {max_size} bytes")
    if isinstance(token, bytes):
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            raise TokenInvalid("token contains non-ASCII bytes") from None
    else:
        text = token
        if not text.isascii():
            raise TokenInvalid("token contains non-ASCII characters")
    if text.startswith("{"):
        raise TokenInvalid("JWS JSON serialization is not supported, only the compact form")
    return text


def _split_compact(text: str) -> tuple[str, str, str]:
    segments = text.split(".")
    if len(segments) == 5:
        raise TokenInvalid("token has 5 segments (a JWE), and encrypted tokens are not supported")
    if len(segments) != 3:
        raise TokenInvalid(f"token has {len(segments)} segments, but a compact JWS has 3")
    return segments[0], segments[1], segments[2]


def _decode_segment(segment: str, name: str) -> bytes:
    try:
        return decode_base64url(segment)
    except ValueError as err:
        raise TokenInvalid(f"{name} is not valid base64url: it {err}") from None


def _parse_header(segment: str) -> dict[str, object]:
    raw = _decode_segment(segment, "header")
    try:
        return load_json_object(raw, "header")
    except JsonInvalid as err:
        raise TokenInvalid(str(err)) from None


def _check_alg(header: Mapping[str, object], allowed_algs: frozenset[str]) -> str:
    alg = header.get("alg")
    if alg is None:
        raise TokenInvalid("header has no alg")
    if not isinstance(alg, str):
        raise TokenInvalid("header alg must be a string")
    if alg.lower() == "none":
        raise TokenInvalid("alg none (an unsigned token) is never accepted")
    if alg not in allowed_algs:
        raise TokenInvalid(f'alg "{excerpt(alg, 32)}" is not allowed for this issuer')
    return alg


def _check_kid(header: Mapping[str, object]) -> str | None:
    if "kid" not in header:
        return None
    kid = header["kid"]
    if not isinstance(kid, str):
        raise TokenInvalid("header kid must be a string")
    if len(kid) > MAX_KID_LENGTH:
        raise TokenInvalid(f"header kid is longer than {MAX_KID_LENGTH} characters")
    return kid


def _check_crit(header: Mapping[str, object]) -> None:
    if "crit" not in header:
        return
    crit = header["crit"]
    if (
        not isinstance(crit, list)
        or not crit
        or not all(isinstance(name, str) for name in crit)
        or len(set(crit)) != len(crit)
    ):
        raise TokenInvalid("header crit must be a non-empty array of distinct strings")
    # No JWS extension is implemented, so every listed name is unsupported.
    raise TokenInvalid(f'critical header parameter "{excerpt(crit[0], 32)}" is not supported')


def _check_key_source_headers(header: Mapping[str, object]) -> None:
    for name in KEY_SOURCE_HEADERS:
        if name in header:
            raise TokenInvalid(
                f"header parameter {name} is not accepted, because "
                "keys come only from the issuer's configured key set"
            )


def _check_b64(header: Mapping[str, object]) -> None:
    if "b64" in header and header["b64"] is not True:
        raise TokenInvalid("unencoded payloads (header b64 other than true) are not supported")


def _select_key(keys: KeyLookup, kid: str | None, alg: str) -> VerificationKey:
    candidates = [key for key in keys.find(kid, alg) if kid is None or key.kid == kid]
    if not candidates:
        if kid is None:
            raise TokenInvalid("no verification key is configured for this issuer")
        raise TokenInvalid(f'no key found for kid "{excerpt(kid, 32)}"')

    usable = [key for key in candidates if alg in key.algorithms]
    if not usable:
        raise TokenInvalid(f"no key for this token allows alg {alg}")
    if len(usable) > 1:
        if kid is None:
            raise TokenInvalid(f"token has no kid and {len(usable)} keys allow alg {alg}")
        raise TokenInvalid(f'{len(usable)} keys with kid "{excerpt(kid, 32)}" allow alg {alg}')
    return usable[0]


def _verify_signature(key: VerificationKey, alg: str, data: bytes, signature: bytes) -> None:
    material = key.key
    if alg.startswith("HS") and isinstance(material, bytes):
        _verify_hmac(material, alg, data, signature)
    elif alg.startswith(("RS", "PS")) and isinstance(material, rsa.RSAPublicKey):
        _verify_rsa(material, alg, data, signature)
    elif alg.startswith("ES") and isinstance(material, ec.EllipticCurvePublicKey):
        _verify_ecdsa(material, alg, data, signature)
    elif alg == "EdDSA" and isinstance(material, Ed25519PublicKey):
        _verify_eddsa(material, data, signature)
    else:
        # VerificationKey only lists algorithms that fit its key type.
        raise TokenInvalid(f"alg {alg} does not fit a {key.kty} key")


def _hash_for(alg: str) -> hashes.HashAlgorithm:
    bits = alg[2:]
    if bits == "256":
        return hashes.SHA256()
    if bits == "384":
        return hashes.SHA384()
    if bits == "512":
        return hashes.SHA512()
    raise TokenInvalid(f"alg {alg} is not supported")


def _verify_hmac(secret: bytes, alg: str, data: bytes, signature: bytes) -> None:
    expected = hmac.new(secret, data, _hash_for(alg).name).digest()
    if not hmac.compare_digest(expected, signature):
        raise TokenInvalid("signature verification failed")


def _verify_rsa(key: rsa.RSAPublicKey, alg: str, data: bytes, signature: bytes) -> None:
    expected_length = (key.key_size + 7) // 8
    if len(signature) != expected_length:
        raise TokenInvalid(f"{alg} signature must be {expected_length} bytes")
    hash_algorithm = _hash_for(alg)
    scheme: padding.AsymmetricPadding
    if alg.startswith("PS"):
        scheme = padding.PSS(
            mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size
        )
    else:
        scheme = padding.PKCS1v15()
    try:
        key.verify(signature, data, scheme, hash_algorithm)
    except InvalidSignature:
        raise TokenInvalid("signature verification failed") from None


def _verify_ecdsa(key: ec.EllipticCurvePublicKey, alg: str, data: bytes, signature: bytes) -> None:
    size = (key.curve.key_size + 7) // 8
    if len(signature) != 2 * size:
        raise TokenInvalid(f"{alg} signature must be {2 * size} bytes (R || S)")
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    order = CURVE_ORDERS[key.curve.name]
    if not (0 < r < order and 0 < s < order):
        raise TokenInvalid(f"{alg} signature has r or s outside 1 to n - 1")
    # A high s is accepted: RFC 7518 allows it, and OpenSSL-based issuers
    # produce it for about half of their signatures. (r, n - s) is then a
    # second valid signature of the same token, so revocation is keyed on
    # issuer and jti, never on the signature.
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_hash_for(alg)))
    except InvalidSignature:
        raise TokenInvalid("signature verification failed") from None


def _verify_eddsa(key: Ed25519PublicKey, data: bytes, signature: bytes) -> None:
    if len(signature) != 64:
        raise TokenInvalid("EdDSA signature must be 64 bytes")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise TokenInvalid("signature verification failed") from None
