"""Validate the claims of a JWT (RFC 7519) whose signature `jws.verify_compact` has checked.

`validate_claims` takes the current time as an argument, in seconds since
the Unix epoch, so that callers and tests control the clock. Times in the
token (NumericDate values) must be finite JSON numbers, and a JSON boolean
is not a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ringwall.errors import excerpt
from ringwall.gateway.auth.jwk import JsonInvalid, load_json_object
from ringwall.gateway.auth.jws import TokenInvalid

DEFAULT_LEEWAY = 30.0
MAX_LEEWAY = 300.0
# One day: long enough for the access tokens of common identity providers.
DEFAULT_MAX_LIFETIME = 86_400.0


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """Validation rules for the tokens of one issuer.

    `leeway` (seconds, at most 300) absorbs clock skew in the exp, nbf and
    iat checks. `max_lifetime` (seconds) limits exp - iat, or exp - now when
    the token has no iat. `required_claims` lists further claim names that
    must be present.
    """

    issuer: str
    audiences: frozenset[str]
    leeway: float = DEFAULT_LEEWAY
    max_lifetime: float = DEFAULT_MAX_LIFETIME
    required_claims: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if not self.audiences or not all(self.audiences):
            raise ValueError("audiences must contain at least one non-empty audience")
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY:g} seconds")
        if not (math.isfinite(self.max_lifetime) and self.max_lifetime > 0):
            raise ValueError("max_lifetime must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class Claims:
    """The validated claims of a token.

    `audience` lists every value of the aud claim. `raw` is the whole claims
    set, read-only all the way down: objects are mappings and arrays are tuples.
    """

    issuer: str
    subject: str | None
    audience: tuple[str, ...]
    expires_at: float
    jti: str | None
    raw: Mapping[str, object]


def validate_claims(payload: bytes, rules: ClaimRules, now: float) -> Claims:
    """Parse a JWS payload as a JWT claims set and check it against `rules` at time `now`.

    Raises `TokenInvalid`.
    """
    try:
        claims = load_json_object(payload, "claims set")
    except JsonInvalid as err:
        raise TokenInvalid(str(err)) from None

    for name in sorted(rules.required_claims):
        if name not in claims:
            raise TokenInvalid(f"required claim {name} is missing")
    issuer = _check_issuer(claims, rules.issuer)
    audience = _check_audience(claims, rules.audiences)
    expires_at = _check_times(claims, rules, now)
    return Claims(
        issuer=issuer,
        subject=_optional_string(claims, "sub"),
        audience=audience,
        expires_at=expires_at,
        jti=_optional_string(claims, "jti"),
        raw=_freeze_object(claims),
    )


def _check_issuer(claims: Mapping[str, object], expected: str) -> str:
    issuer = claims.get("iss")
    if issuer is None:
        raise TokenInvalid("iss claim is missing")
    if not isinstance(issuer, str):
        raise TokenInvalid("iss claim must be a string")
    if issuer != expected:
        raise TokenInvalid(f'iss "{excerpt(issuer, 64)}" is not the configured issuer')
    return issuer


def _check_audience(claims: Mapping[str, object], expected: frozenset[str]) -> tuple[str, ...]:
    value = claims.get("aud")
    if value is None:
        raise TokenInvalid("aud claim is missing")
    if isinstance(value, str):
        audience: tuple[str, ...] = (value,)
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        audience = tuple(value)
    else:
        raise TokenInvalid("aud claim must be a string or an array of strings")
    if expected.isdisjoint(audience):
        raise TokenInvalid("aud claim does not contain a configured audience")
    return audience


def _check_times(claims: Mapping[str, object], rules: ClaimRules, now: float) -> float:
    expires_at = _numeric_date(claims, "exp")
    if expires_at is None:
        raise TokenInvalid("exp claim is missing")
    not_before = _numeric_date(claims, "nbf")
    issued_at = _numeric_date(claims, "iat")

    if now >= expires_at + rules.leeway:
        raise TokenInvalid("token has expired")
    if not_before is not None and now + rules.leeway < not_before:
        raise TokenInvalid("token is not valid yet (nbf is in the future)")
    if issued_at is not None and issued_at > now + rules.leeway:
        raise TokenInvalid("iat is in the future")
    if issued_at is not None and expires_at < issued_at:
        raise TokenInvalid("exp is earlier than iat")

    start = issued_at if issued_at is not None else now
    if expires_at - start > rules.max_lifetime:
        raise TokenInvalid(
            f"token lifetime is longer than the maximum of {rules.max_lifetime:g} seconds"
        )
    return expires_at


def _numeric_date(claims: Mapping[str, object], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    # bool is a subclass of int, but JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenInvalid(f"{name} claim must be a number")
    try:
        seconds = float(value)
    except OverflowError:
        raise TokenInvalid(f"{name} claim is out of range") from None
    if not math.isfinite(seconds):
        raise TokenInvalid(f"{name} claim is out of range")
    return seconds


def _optional_string(claims: Mapping[str, object], name: str) -> str | None:
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, str):
        raise TokenInvalid(f"{name} claim must be a string")
    return value


def _freeze_object(value: dict[str, object]) -> Mapping[str, object]:
    return MappingProxyType({name: _freeze(item) for name, item in value.items()})


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return _freeze_object(value)
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value
