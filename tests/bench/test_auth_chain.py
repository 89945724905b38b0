"""Unit tests for the ringwall-auth setup, the auth chain ratio and the cold JWT report."""

import base64
import json
import time
from pathlib import Path

import pytest
import yaml
from auth_chain import (
    AUDIENCE,
    ISSUER,
    KEY_ID,
    REQUIRED_ROLE,
    REQUIRED_SCOPE,
    TOKEN_LIFETIME_S,
    audit_setting,
    auth_config,
    b64url_uint,
    bearer_headers,
    prepare_auth_chain,
    redact_authorization,
    token_claims,
)
from jwt_cold import ColdTimings, format_cold_report
from report import (
    auth_chain_ratio,
    auth_chain_verdict,
    format_auth_chain_lines,
    result_to_json,
)

from ringwall.config import parse_config
from ringwall.config.model import LogConfig
from ringwall.gateway.auth.jwk import parse_jwks
from ringwall.gateway.auth.jws import StaticKeySet, verify_compact
from tests.support.bench_results import system_result


def _payload(token: str) -> dict[str, object]:
    segment = token.split(".")[1]
    decoded: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def test_token_claims_fields() -> None:
    claims = token_claims(1_800_000_000, "abc", roles=[REQUIRED_ROLE])

    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "bench-user-1"
    assert claims["roles"] == [REQUIRED_ROLE]
    assert claims["scope"] == REQUIRED_SCOPE
    assert claims["iat"] == 1_800_000_000
    assert claims["exp"] == 1_800_000_000 + TOKEN_LIFETIME_S
    assert claims["jti"] == "abc"


def test_auth_config_without_audit(tmp_path: Path) -> None:
    config = auth_config(tmp_path / "jwks.json", None)

    assert "logging" not in config
    issuer = config["auth"]["issuers"]["bench"]
    assert issuer["jwks"] == f"file:{tmp_path / 'jwks.json'}"
    assert issuer["algorithms"] == ["RS256"]
    route = config["routes"][0]
    assert route["path"] == "/"
    assert route["auth"] == "jwt"
    assert route["authorize"] == [{"roles": [REQUIRED_ROLE], "scopes": [REQUIRED_SCOPE]}]


def test_auth_config_with_audit(tmp_path: Path) -> None:
    audit = {"destination": str(tmp_path / "audit.jsonl")}

    config = auth_config(tmp_path / "jwks.json", audit)

    assert config["logging"] == {"audit": audit}


def test_auth_config_accepted_by_ringwall(tmp_path: Path) -> None:
    text = yaml.safe_dump(auth_config(tmp_path / "jwks.json", None))

    config = parse_config(text, {"UPSTREAM_URL": "http://127.0.0.1:9"})

    route = config.routes[0]
    assert route.auth.methods == ("jwt",)
    assert route.authorize[0].roles.any_of == (REQUIRED_ROLE,)
    assert route.authorize[0].scopes.any_of == (REQUIRED_SCOPE,)
    assert config.auth.issuers["bench"].audiences == (AUDIENCE,)


def test_audit_setting_matches_schema(tmp_path: Path) -> None:
    destination = tmp_path / "audit.jsonl"

    value, note = audit_setting(destination)

    if "audit" in LogConfig.model_fields:
        assert value is not None
        assert note == f"on: {destination}"
    else:
        assert value is None
        assert note.startswith("off: ")


def test_prepare_auth_chain_files(tmp_path: Path) -> None:
    chain = prepare_auth_chain(tmp_path)

    config = parse_config(chain.config_path.read_text(), {"UPSTREAM_URL": "http://127.0.0.1:9"})
    assert config.auth.issuers["bench"].jwks == f"file:{tmp_path / 'jwks.json'}"
    if chain.audit_log is not None:
        assert config.logging.audit.destination == str(chain.audit_log)
    assert chain.setup()["token_claims"] == dict(chain.claims)
    assert chain.token not in json.dumps(chain.setup())


def test_prepare_auth_chain_token_verifies(tmp_path: Path) -> None:
    chain = prepare_auth_chain(tmp_path)
    keys = parse_jwks((tmp_path / "jwks.json").read_bytes()).keys

    verified = verify_compact(chain.token, StaticKeySet(keys), frozenset({"RS256"}))

    assert verified.alg == "RS256"
    assert verified.kid == KEY_ID
    assert json.loads(verified.payload) == dict(chain.claims)


def test_prepare_auth_chain_tokens_differ_in_role(tmp_path: Path) -> None:
    chain = prepare_auth_chain(tmp_path)

    with_role = _payload(chain.token)
    without_role = _payload(chain.token_without_role)

    assert with_role["roles"] == [REQUIRED_ROLE]
    assert without_role["roles"] == ["viewer"]
    assert with_role["jti"] != without_role["jti"]
    assert 0 <= time.time() - float(str(with_role["iat"])) < 60


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(65537, "AQAB"), (1, "AQ"), (255, "_w"), (256, "AQA")],
)
def test_b64url_uint(value: int, encoded: str) -> None:
    assert b64url_uint(value) == encoded


def test_bearer_headers_keep_base() -> None:
    base = {"Host": "localhost"}

    headers = bearer_headers(base, "abc.def.ghi")

    assert headers == {"Host": "localhost", "Authorization": "Bearer abc.def.ghi"}
    assert base == {"Host": "localhost"}


def test_redact_authorization_header() -> None:
    command = ["wrk", "-H", "Host: localhost", "-H", "authorization: Bearer abc.def.ghi", "url"]

    redacted = redact_authorization(command)

    assert redacted == [
        "wrk",
        "-H",
        "Host: localhost",
        "-H",
        "Authorization: Bearer [RS256 token]",
        "url",
    ]
    assert command[4] == "authorization: Bearer abc.def.ghi"


def test_auth_chain_ratio_divides_plain_by_chain() -> None:
    # 40 µs per request plain, 50 µs with the JWT chain.
    results = [
        system_result("ringwall", 250_000, 10.0),
        system_result("ringwall-auth", 200_000, 10.0),
    ]

    assert auth_chain_ratio(results) == pytest.approx(0.8)


def test_auth_chain_ratio_needs_valid_runs() -> None:
    plain = system_result("ringwall", 250_000, 10.0)
    invalid_chain = system_result("ringwall-auth", 200_000, 10.0, status="invalid")

    assert auth_chain_ratio([plain]) is None
    assert auth_chain_ratio([plain, invalid_chain]) is None


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [
        (0.80, "PASS: ratio 0.80, target >= 0.75"),
        (0.75, "PASS: ratio 0.75, target >= 0.75"),
        (0.74, "FAIL: ratio 0.74, target >= 0.75"),
        (None, "not measured: needs valid ringwall and ringwall-auth runs"),
    ],
)
def test_auth_chain_verdict(ratio: float | None, verdict: str) -> None:
    assert auth_chain_verdict(ratio) == verdict


def test_auth_chain_lines() -> None:
    lines = format_auth_chain_lines(0.5).splitlines()

    assert lines == [
        "auth chain (ringwall CPU/request / ringwall-auth CPU/request): 0.50",
        "auth chain target: FAIL: ratio 0.50, target >= 0.75",
    ]


def test_result_json_with_setup() -> None:
    result = system_result("ringwall-auth", 200_000, 10.0)
    result.setup = {"algorithm": "RS256"}

    record = result_to_json(result)

    assert record["setup"] == {"algorithm": "RS256"}
    assert "setup" not in result_to_json(system_result("ringwall", 200_000, 10.0))


def test_cold_report_lines() -> None:
    timings = ColdTimings(0, {"RS256": 38.21, "ES256": 82.9, "EdDSA": 118.66})

    lines = format_cold_report(timings).splitlines()

    assert lines[0].startswith("cold JWT verification (verify_compact in-process on CPU 0")
    assert lines[1:] == ["  RS256     38.2 µs", "  ES256     82.9 µs", "  EdDSA    118.7 µs"]


def test_cold_timings_json() -> None:
    document = ColdTimings(1, {"RS256": 38.2}).to_json()

    assert document["cpu"] == 1
    assert document["us_per_verification"] == {"RS256": 38.2}
    assert document["function"] == "ringwall.gateway.auth.jws.verify_compact"
