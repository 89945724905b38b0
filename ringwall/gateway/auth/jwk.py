"""Parse JSON Web Key Sets (RFC 7517) into keys that may verify JWS signatures.

Only public parameters are read. Private members such as `d`, `p` and `q`
are ignored, so a key set that publishes private material by mistake still
yields verification-only keys.

The algorithms a key may verify follow from its type and size, narrowed to
its `alg` member when present:

- RSA of 2048 to 8192 bits: RS256, RS384, RS512, PS256, PS384, PS512.
- EC P-256: ES256. EC P-384: ES384. EC P-521: ES512.
- OKP Ed25519: EdDSA.
- oct (HMAC secrets, only with `allow_symmetric`): HS256 from 256 bits,
  HS384 from 384 bits and HS512 from 512 bits, because RFC 7518 section 3.2
  requires a key at least as long as the hash output.

A malformed member (invalid base64url, an EC point not on its curve, a
`kid` that is not a string) rejects the whole document with `JwksInvalid`.
A well-formed key that cannot be used here (another `use`, `key_ops`
without "verify", an unsupported key type or curve, a key that is too
small) is skipped, and `JwkSet.skipped` records why.

The strict base64url and JSON readers used by `jws` and `jwt` live here too.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ringwall.errors import excerpt

MAX_JWKS_SIZE = 65_536
MAX_KID_LENGTH = 256
# Deeper arrays and objects are rejected. JWK sets, JWS headers and JWT claims
# sets in common use nest only a few levels.
MAX_JSON_DEPTH = 32
RSA_MIN_BITS = 2048
# Larger moduli only make verification slower for every request.
RSA_MAX_BITS = 8192

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# JWK curve name -> (curve, the one algorithm that curve verifies).
EC_CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "P-256": (ec.SECP256R1(), "ES256"),
    "P-384": (ec.SECP384R1(), "ES384"),
    "P-521": (ec.SECP521R1(), "ES512"),
}
# HMAC algorithm -> minimum secret length in bytes (the hash output size).
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | Ed25519PublicKey
# A public key object, or the raw secret of an HMAC key.
KeyMaterial = PublicKey | bytes

_BASE64URL_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


class JwksInvalid(ValueError):
    """A JWK set document that cannot be used, with the problem in `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JsonInvalid(ValueError):
    """Input that `load_json_object` does not accept as a strict JSON object."""


# Encoding helpers shared with jws and jwt.


def decode_base64url(text: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 section 2), accepting only the canonical form.

    Raises ValueError for padding, whitespace, characters outside the
    alphabet, an impossible length, or non-zero unused bits in the last
    character, so each byte string has exactly one accepted encoding.
    """
    if not _BASE64URL_ALPHABET.fullmatch(text):
        raise ValueError("contains characters outside the base64url alphabet")
    if len(text) % 4 == 1:
        raise ValueError("has an impossible length")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as err:
        raise ValueError("cannot be decoded") from err
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != text.encode("ascii"):
        raise ValueError("has non-zero unused bits")
    return raw


def load_json_object(data: bytes, document_name: str) -> dict[str, object]:
    """Parse UTF-8 JSON that must be an object, rejecting what lenient parsers accept.

    Rejects duplicate member names (also when written with \\u escapes),
    NaN, Infinity and numbers that overflow a float, strings with unpaired
    surrogates, a byte order mark, and arrays or objects nested deeper than
    `MAX_JSON_DEPTH`. Raises `JsonInvalid` with a message that starts with `document_name`.
    """
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
            parse_float=_parse_finite_float,
        )
    except UnicodeDecodeError as err:
        raise JsonInvalid(f"{document_name} is not valid UTF-8") from err
    except RecursionError as err:
        raise JsonInvalid(f"{document_name} is nested too deeply") from err
    except JsonInvalid as err:
        raise JsonInvalid(f"{document_name} is not valid JSON: {err}") from err
    except json.JSONDecodeError as err:
        raise JsonInvalid(
            f"{document_name} is not valid JSON: {err.msg} at offset {err.pos}"
        ) from err
    except ValueError as err:
        # int() rejects numbers with more digits than sys.get_int_max_str_digits().
        raise JsonInvalid(f"{document_name} is not valid JSON: a number is too long") from err
    if not isinstance(value, dict):
        raise JsonInvalid(f"{document_name} is not a JSON object")
    _check_strings_and_depth(value, document_name)
    return value


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for name, value in pairs:
        if name in result:
            raise JsonInvalid(f'duplicate member "{excerpt(name, 32)}"')
        result[name] = value
    return result


def _reject_constant(name: str) -> float:
    raise JsonInvalid(f"{name} is not a JSON number")


def _parse_finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInvalid("a number is out of range")
    return value


def _check_strings_and_depth(value: object, document_name: str) -> None:
    # json.loads turns an escaped lone surrogate such as "\ud800" into a str
    # that cannot be encoded as UTF-8 later (in logs or upstream headers).
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not _is_utf8_encodable(item):
                raise JsonInvalid(f"{document_name} contains a string with an unpaired surrogate")
            continue
        if isinstance(item, dict | list) and depth > MAX_JSON_DEPTH:
            raise JsonInvalid(f"{document_name} is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(item, dict):
            pending.extend((name, depth) for name in item)
            pending.extend((member, depth + 1) for member in item.values())
        elif isinstance(item, list):
            pending.extend((member, depth + 1) for member in item)


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Keys.


def supported_algorithms(key: KeyMaterial) -> frozenset[str]:
    """Return every JWS algorithm that `key` is strong enough and of the right type to verify."""
    if isinstance(key, bytes):
        return frozenset(alg for alg, size in HMAC_MIN_BYTES.items() if len(key) >= size)
    if isinstance(key, rsa.RSAPublicKey):
        if RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            return RSA_ALGORITHMS
        return frozenset()
    if isinstance(key, ec.EllipticCurvePublicKey):
        for curve, alg in EC_CURVES.values():
            if key.curve.name == curve.name:
                return frozenset({alg})
        return frozenset()
    return frozenset({"EdDSA"})


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key that may verify JWS signatures, with the algorithms it is allowed to verify.

    `kid` is an opaque identifier, compared for equality only. `key` is a
    pyca/cryptography public key, or the secret bytes of an HMAC key (left
    out of the repr). `algorithms` must be a non-empty subset of
    `supported_algorithms(key)`, so a key can never be used with an
    algorithm of another family, whatever algorithm a token's header names.
    """

    kid: str | None
    key: KeyMaterial = field(repr=False)
    algorithms: frozenset[str]

    def __post_init__(self) -> None:
        if self.kid is not None and len(self.kid) > MAX_KID_LENGTH:
            raise ValueError(f"kid is longer than {MAX_KID_LENGTH} characters")
        if not self.algorithms:
            raise ValueError("a verification key needs at least one algorithm")
        unusable = self.algorithms - supported_algorithms(self.key)
        if unusable:
            raise ValueError(f"this {self.kty} key cannot verify {', '.join(sorted(unusable))}")

    @property
    def kty(self) -> str:
        """JWK key type: "RSA", "EC", "OKP" or "oct"."""
        if isinstance(self.key, bytes):
            return "oct"
        if isinstance(self.key, rsa.RSAPublicKey):
            return "RSA"
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            return "EC"
        return "OKP"


def verification_key(
    key: KeyMaterial, *, kid: str | None = None, alg: str | None = None
) -> VerificationKey:
    """Build a key allowed to verify every supported algorithm, or only `alg` when given.

    Use this for keys from local configuration, such as HMAC secrets.
    Raises ValueError when the key supports no algorithm or not `alg`.
    """
    algorithms = supported_algorithms(key)
    if alg is not None:
        if alg not in algorithms:
            raise ValueError(f'alg "{excerpt(alg, 32)}" cannot be used with this key')
        algorithms = frozenset({alg})
    return VerificationKey(kid, key, algorithms)


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A key in a JWK set that was left out, with its position and the reason."""

    index: int
    kid: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class JwkSet:
    """The usable keys of a JWK set document, and the keys that were skipped."""

    keys: tuple[VerificationKey, ...]
    skipped: tuple[SkippedKey, ...]


class _KeySkipped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_jwks(
    document: bytes, *, allow_symmetric: bool = False, max_size: int = MAX_JWKS_SIZE
) -> JwkSet:
    """Parse a JWK set document (`{"keys": [...]}`) into verification keys.

    `allow_symmetric` admits oct (HMAC) keys. Pass it only for key sets from
    local configuration: an HMAC secret published in a fetched key set is
    known to everyone who can fetch it. A set may not mix oct keys with
    asymmetric keys. Raises `JwksInvalid`.
    """
    if len(document) > max_size:
        raise JwksInvalid(f"JWK set is larger than {max_size} bytes")
    try:
        root = load_json_object(document, "JWK set")
    except JsonInvalid as err:
        raise JwksInvalid(str(err)) from err
    members = root.get("keys")
    if not isinstance(members, list):
        raise JwksInvalid('JWK set has no "keys" array')

    keys: list[VerificationKey] = []
    skipped: list[SkippedKey] = []
    for index, member in enumerate(members):
        if not isinstance(member, dict):
            raise JwksInvalid(f"keys[{index}] is not a JSON object")
        kid = _optional_string(member, "kid", index)
        try:
            keys.append(_parse_key(member, kid, index, allow_symmetric))
        except _KeySkipped as skip:
            skipped.append(SkippedKey(index, kid, skip.reason))
    _reject_mixed_key_types(keys)
    return JwkSet(tuple(keys), tuple(skipped))


def _reject_mixed_key_types(keys: list[VerificationKey]) -> None:
    symmetric = sum(1 for key in keys if key.kty == "oct")
    if 0 < symmetric < len(keys):
        raise JwksInvalid(
            "JWK set mixes oct (HMAC) keys with asymmetric keys. "
            "Configure HMAC secrets for a separate issuer"
        )


def _parse_key(
    member: dict[str, object], kid: str | None, index: int, allow_symmetric: bool
) -> VerificationKey:
    kty = _optional_string(member, "kty", index)
    if kty is None:
        raise JwksInvalid(f"keys[{index}] has no kty")
    if kid is not None and len(kid) > MAX_KID_LENGTH:
        raise JwksInvalid(f"keys[{index}].kid is longer than {MAX_KID_LENGTH} characters")
    _check_intended_use(member, index)
    alg = _optional_string(member, "alg", index)

    key = _parse_key_material(member, kty, index, allow_symmetric)
    algorithms = supported_algorithms(key)
    if alg is not None:
        if alg not in algorithms:
            raise _KeySkipped(f'alg "{excerpt(alg, 32)}" cannot be used with this {kty} key')
        algorithms = frozenset({alg})
    return VerificationKey(kid, key, algorithms)


def _check_intended_use(member: dict[str, object], index: int) -> None:
    use = _optional_string(member, "use", index)
    if use is not None and use != "sig":
        raise _KeySkipped(f'use is "{excerpt(use, 32)}", not sig')
    if "key_ops" not in member:
        return
    key_ops = member["key_ops"]
    if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
        raise JwksInvalid(f"keys[{index}].key_ops must be an array of strings")
    if "verify" not in key_ops:
        raise _KeySkipped('key_ops does not include "verify"')


def _parse_key_material(
    member: dict[str, object], kty: str, index: int, allow_symmetric: bool
) -> KeyMaterial:
    if kty == "RSA":
        return _parse_rsa(member, index)
    if kty == "EC":
        return _parse_ec(member, index)
    if kty == "OKP":
        return _parse_okp(member, index)
    if kty == "oct":
        if not allow_symmetric:
            raise _KeySkipped("oct (HMAC) keys are accepted only from local configuration")
        return _parse_oct(member, index)
    raise _KeySkipped(f'kty "{excerpt(kty, 32)}" is not supported')


def _parse_rsa(member: dict[str, object], index: int) -> rsa.RSAPublicKey:
    modulus = int.from_bytes(_required_bytes(member, "n", index), "big")
    exponent = int.from_bytes(_required_bytes(member, "e", index), "big")
    bits = modulus.bit_length()
    if bits < RSA_MIN_BITS:
        raise _KeySkipped(f"RSA key has {bits} bits, below the minimum of {RSA_MIN_BITS}")
    if bits > RSA_MAX_BITS:
        raise _KeySkipped(f"RSA key has {bits} bits, above the maximum of {RSA_MAX_BITS}")
    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError as err:
        raise JwksInvalid(f"keys[{index}] is not a valid RSA public key: {err}") from err


def _parse_ec(member: dict[str, object], index: int) -> ec.EllipticCurvePublicKey:
    crv = _optional_string(member, "crv", index)
    if crv is None:
        raise JwksInvalid(f"keys[{index}] has no crv")
    if crv not in EC_CURVES:
        raise _KeySkipped(f'EC curve "{excerpt(crv, 32)}" is not supported')
    curve, _ = EC_CURVES[crv]
    size = (curve.key_size + 7) // 8
    x = _required_bytes(member, "x", index)
    y = _required_bytes(member, "y", index)
    if len(x) != size or len(y) != size:
        raise JwksInvalid(f"keys[{index}]: {crv} coordinates must be {size} bytes each")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except ValueError as err:
        raise JwksInvalid(f"keys[{index}]: the point is not on curve {crv}") from err


def _parse_okp(member: dict[str, object], index: int) -> Ed25519PublicKey:
    crv = _optional_string(member, "crv", index)
    if crv is None:
        raise JwksInvalid(f"keys[{index}] has no crv")
    if crv != "Ed25519":
        raise _KeySkipped(f'OKP curve "{excerpt(crv, 32)}" is not supported')
    x = _required_bytes(member, "x", index)
    if len(x) != 32:
        raise JwksInvalid(f"keys[{index}]: an Ed25519 public key must be 32 bytes")
    return Ed25519PublicKey.from_public_bytes(x)


def _parse_oct(member: dict[str, object], index: int) -> bytes:
    secret = _required_bytes(member, "k", index)
    minimum = HMAC_MIN_BYTES["HS256"]
    if len(secret) < minimum:
        raise _KeySkipped(
            f"HMAC key has {len(secret) * 8} bits, below the minimum of {minimum * 8}"
        )
    return secret


def _optional_string(member: Mapping[str, object], name: str, index: int) -> str | None:
    value = member.get(name)
    if value is None and name not in member:
        return None
    if not isinstance(value, str):
        raise JwksInvalid(f"keys[{index}].{name} must be a string")
    return value


def _required_bytes(member: Mapping[str, object], name: str, index: int) -> bytes:
    value = _optional_string(member, name, index)
    if value is None:
        raise JwksInvalid(f"keys[{index}] has no {name}")
    try:
        return decode_base64url(value)
    except ValueError as err:
        raise JwksInvalid(f"keys[{index}].{name} is not valid base64url: it {err}") from err
