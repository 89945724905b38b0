"""Tests for ringwall.gateway.auth.jwt: JWT claim validation, one test per rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ringwall.gateway.auth.jws import TokenInvalid
from ringwall.gateway.auth.jwt import MAX_LEEWAY, ClaimRules, validate_claims

NOW = 1_800_000_000.0
ISSUER = "https://issuer.example"
RULES = ClaimRules(issuer=ISSUER, audiences=frozenset({"api", "admin"}), max_lifetime=3600)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "api",
        "iat": NOW - 60,
        "nbf": NOW - 60,
        "exp": NOW + 600,
        "jti": "token-1",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def rejection(payload: bytes, rules: ClaimRules = RULES, now: float = NOW) -> str:
    with pytest.raises(TokenInvalid) as caught:
        validate_claims(payload, rules, now)
    assert caught.value.error == "invalid_token"
    return caught.value.reason


def test_valid_claims_returned() -> None:
    result = validate_claims(encode(claims()), RULES, NOW)
    assert result.issuer == ISSUER
    assert result.subject == "alice"
    assert result.audience == ("api",)
    assert result.expires_at == NOW + 600
    assert result.jti == "token-1"
    assert result.raw["sub"] == "alice"


def test_optional_claims_absent() -> None:
    result = validate_claims(encode(claims(sub=None, jti=None, iat=None, nbf=None)), RULES, NOW)
    assert result.subject is None
    assert result.jti is None


def test_raw_claims_read_only_throughout() -> None:
    raw = validate_claims(encode(claims(roles=["a"], extra={"x": [1]})), RULES, NOW).raw
    with pytest.raises(TypeError):
        raw["sub"] = "mallory"  # type: ignore[index]
    assert raw["roles"] == ("a",)
    extra = raw["extra"]
    with pytest.raises(TypeError):
        extra["x"] = 2  # type: ignore[index]


# Payload parsing.


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not valid JSON"),
        (b'["iss"]', "not a JSON object"),
        (b'{"sub": "a", "sub": "b"}', 'duplicate member "sub"'),
        (b'{"sub": "a", "\\u0073ub": "b"}', 'duplicate member "sub"'),
        (b'{"exp": NaN}', "NaN"),
        (b'{"exp": Infinity}', "Infinity"),
        (b'{"exp": 1e400}', "out of range"),
    ],
)
def test_payload_not_strict_json_object_rejected(payload: bytes, message: str) -> None:
    reason = rejection(payload)
    assert reason.startswith("claims set")
    assert message in reason


# exp, nbf and iat.


def test_exp_missing_rejected() -> None:
    assert rejection(encode(claims(exp=None))) == "exp claim is missing"


@pytest.mark.parametrize("value", ["1900000000", True, None, [1]])
def test_exp_not_number_rejected(value: object) -> None:
    payload = encode({**claims(), "exp": value})
    assert rejection(payload) == "exp claim must be a number"


def test_exp_huge_integer_rejected() -> None:
    assert rejection(encode(claims(exp=10**400))) == "exp claim is out of range"


def test_expired_token_rejected() -> None:
    assert rejection(encode(claims(exp=NOW - 30))) == "token has expired"


def test_expired_within_leeway_accepted() -> None:
    assert validate_claims(encode(claims(exp=NOW - 29)), RULES, NOW).expires_at == NOW - 29


def test_nbf_beyond_leeway_rejected() -> None:
    reason = rejection(encode(claims(nbf=NOW + 31)))
    assert reason == "token is not valid yet (nbf is in the future)"


def test_nbf_within_leeway_accepted() -> None:
    assert validate_claims(encode(claims(nbf=NOW + 30)), RULES, NOW).subject == "alice"


def test_nbf_not_number_rejected() -> None:
    assert rejection(encode(claims(nbf=False))) == "nbf claim must be a number"


def test_iat_in_future_rejected() -> None:
    assert rejection(encode(claims(iat=NOW + 31))) == "iat is in the future"


def test_exp_before_iat_rejected() -> None:
    assert rejection(encode(claims(iat=NOW + 20, exp=NOW + 10))) == "exp is earlier than iat"


def test_lifetime_from_iat_over_maximum_rejected() -> None:
    reason = rejection(encode(claims(iat=NOW - 60, exp=NOW - 60 + 3601)))
    assert reason == "token lifetime is longer than the maximum of 3600 seconds"


def test_lifetime_from_iat_at_maximum_accepted() -> None:
    payload = encode(claims(iat=NOW - 60, exp=NOW - 60 + 3600))
    assert validate_claims(payload, RULES, NOW).subject == "alice"


def test_lifetime_from_now_without_iat_over_maximum_rejected() -> None:
    reason = rejection(encode(claims(iat=None, exp=NOW + 3601)))
    assert reason == "token lifetime is longer than the maximum of 3600 seconds"


# iss and aud.


def test_iss_missing_rejected() -> None:
    assert rejection(encode(claims(iss=None))) == "iss claim is missing"


def test_iss_not_string_rejected() -> None:
    assert rejection(encode(claims(iss=["x"]))) == "iss claim must be a string"


@pytest.mark.parametrize(
    "issuer", [ISSUER + "/", ISSUER + ".evil", "https://ISSUER.example", ISSUER[:-1]]
)
def test_iss_must_match_exactly(issuer: str) -> None:
    assert "is not the configured issuer" in rejection(encode(claims(iss=issuer)))


def test_aud_list_with_configured_audience_accepted() -> None:
    result = validate_claims(encode(claims(aud=["other", "admin"])), RULES, NOW)
    assert result.audience == ("other", "admin")


@pytest.mark.parametrize("aud", ["ap", "api2", "API", " api", ["apis"], [], "other"])
def test_aud_without_exact_match_rejected(aud: object) -> None:
    reason = rejection(encode(claims(aud=aud)))
    assert reason == "aud claim does not contain a configured audience"


def test_aud_missing_rejected() -> None:
    assert rejection(encode(claims(aud=None))) == "aud claim is missing"


@pytest.mark.parametrize("aud", [1, {"api": True}, ["api", 1]])
def test_aud_wrong_type_rejected(aud: object) -> None:
    reason = rejection(encode(claims(aud=aud)))
    assert reason == "aud claim must be a string or an array of strings"


# Other claims.


def test_required_claim_missing_rejected() -> None:
    rules = ClaimRules(
        issuer=ISSUER, audiences=frozenset({"api"}), required_claims=frozenset({"scope"})
    )
    assert rejection(encode(claims()), rules) == "required claim scope is missing"


def test_required_claim_present_accepted() -> None:
    rules = ClaimRules(
        issuer=ISSUER, audiences=frozenset({"api"}), required_claims=frozenset({"scope"})
    )
    assert validate_claims(encode(claims(scope="read")), rules, NOW).raw["scope"] == "read"


@pytest.mark.parametrize("name", ["sub", "jti"])
def test_sub_and_jti_must_be_strings(name: str) -> None:
    assert rejection(encode(claims(**{name: 5}))) == f"{name} claim must be a string"


# ClaimRules.


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"issuer": ""}, "issuer"),
        ({"audiences": frozenset()}, "audiences"),
        ({"audiences": frozenset({""})}, "audiences"),
        ({"leeway": -1}, "leeway"),
        ({"leeway": MAX_LEEWAY + 1}, "leeway"),
        ({"leeway": float("nan")}, "leeway"),
        ({"max_lifetime": 0}, "max_lifetime"),
        ({"max_lifetime": float("inf")}, "max_lifetime"),
    ],
)
def test_claim_rules_validated(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"issuer": ISSUER, "audiences": frozenset({"api"})}
    with pytest.raises(ValueError, match=message):
        ClaimRules(**{**arguments, **options})


def test_claim_rules_defaults() -> None:
    rules = ClaimRules(issuer=ISSUER, audiences=frozenset({"api"}))
    assert rules.leeway == 30
    assert rules.max_lifetime == 86_400
    assert rules.required_claims == frozenset()
