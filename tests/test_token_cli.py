"""The `ringwall token` command: demo JWTs signed with the key that `ringwall demo` created."""

import argparse
import base64
import json
from pathlib import Path

import pytest

from ringwall.demo.issuer import (
    DEMO_AUDIENCE,
    DEMO_ISSUER,
    KEY_FILE_NAME,
    DemoIssuer,
    load_or_create_issuer,
)
from ringwall.gateway.auth.jwk import parse_jwks
from ringwall.gateway.auth.jws import StaticKeySet, TokenInvalid, verify_compact
from ringwall.gateway.auth.jwt import ClaimRules, Claims, validate_claims
from ringwall.token_cli import add_token_parser, parse_accounts, parse_ttl, run_token

NOW = 1_800_000_000.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringwall")
    add_token_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv: list[str], now: float = NOW) -> int:
    arguments = build_parser().parse_args(["token", *argv])
    return run_token(arguments, clock=lambda: now)


def verify(
    issuer: DemoIssuer, token: str, now: float = NOW, audience: str = DEMO_AUDIENCE
) -> Claims:
    key_set = parse_jwks(issuer.jwks())
    verified = verify_compact(token, StaticKeySet(key_set.keys), frozenset({"RS256"}))
    rules = ClaimRules(issuer=DEMO_ISSUER, audiences=frozenset({audience}))
    return validate_claims(verified.payload, rules, now)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def issuer(state_dir: Path) -> DemoIssuer:
    return load_or_create_issuer(state_dir)


def printed_token(capsys: pytest.CaptureFixture[str]) -> str:
    output = capsys.readouterr()
    assert output.err == ""
    lines = output.out.splitlines()
    assert len(lines) == 1
    return lines[0]


# Missing state


def test_rejects_missing_state_dir(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--sub", "alice", "--state", str(state_dir)]) == 2

    output = capsys.readouterr()
    assert output.out == ""
    assert output.err.count("\n") == 1
    assert output.err.startswith("ringwall token: no demo issuer key in ")
    assert str(state_dir) in output.err
    assert "Run `ringwall demo` first" in output.err
    assert not state_dir.exists()


def test_rejects_empty_state_dir(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir.mkdir()
    assert run(["--sub", "alice", "--state", str(state_dir)]) == 2
    assert str(state_dir / KEY_FILE_NAME) in capsys.readouterr().err
    assert list(state_dir.iterdir()) == []


def test_rejects_invalid_key_file(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir.mkdir()
    (state_dir / KEY_FILE_NAME).write_text("garbage")
    assert run(["--sub", "alice", "--state", str(state_dir)]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert "invalid demo issuer key file" in output.err


def test_unreadable_state_is_io_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / KEY_FILE_NAME).mkdir()
    assert run(["--sub", "alice", "--state", str(state_dir)]) == 1
    assert "ringwall token: I/O error on " in capsys.readouterr().err


def test_default_state_dir_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["--sub", "alice"]) == 2
    assert ".ringwall" in capsys.readouterr().err
    assert not (tmp_path / ".ringwall").exists()

    issuer = load_or_create_issuer(Path(".ringwall"))
    assert run(["--sub", "alice"]) == 0
    assert verify(issuer, printed_token(capsys)).subject == "alice"


# Tokens


def test_prints_verifiable_token(
    issuer: DemoIssuer, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--sub", "alice", "--role", "customer", "--role", "support"]
    argv += ["--scope", "accounts:read", "--scope", "payments:write"]
    argv += ["--accounts", "acc-1001,acc-1002", "--ttl", "600", "--state", str(state_dir)]
    assert run(argv) == 0

    claims = verify(issuer, printed_token(capsys))

    assert claims.issuer == DEMO_ISSUER
    assert claims.subject == "alice"
    assert claims.audience == (DEMO_AUDIENCE,)
    assert claims.expires_at == NOW + 600
    assert claims.raw["iat"] == NOW
    assert claims.raw["roles"] == ("customer", "support")
    assert claims.raw["scope"] == "accounts:read payments:write"
    assert claims.raw["accounts"] == ("acc-1001", "acc-1002")
    assert claims.jti


def test_defaults(issuer: DemoIssuer, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--sub", "alice", "--state", str(state_dir)]) == 0

    claims = verify(issuer, printed_token(capsys))

    assert claims.expires_at == NOW + 300
    assert claims.raw["roles"] == ()
    assert "scope" not in claims.raw
    assert "accounts" not in claims.raw


def test_audience_option(
    issuer: DemoIssuer, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--sub", "alice", "--aud", "other-api", "--state", str(state_dir)]) == 0
    claims = verify(issuer, printed_token(capsys), audience="other-api")
    assert claims.audience == ("other-api",)


def test_accounts_option_repeatable(
    issuer: DemoIssuer, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--sub", "alice", "--accounts", "acc-1, acc-2", "--accounts", "acc-3"]
    assert run([*argv, "--state", str(state_dir)]) == 0
    claims = verify(issuer, printed_token(capsys))
    assert claims.raw["accounts"] == ("acc-1", "acc-2", "acc-3")


@pytest.mark.parametrize("ttl_argv", [["--ttl", "-120"], ["--ttl=-120"]])
def test_negative_ttl_gives_expired_token(
    issuer: DemoIssuer,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
    ttl_argv: list[str],
) -> None:
    assert run(["--sub", "alice", *ttl_argv, "--state", str(state_dir)]) == 0
    token = printed_token(capsys)
    with pytest.raises(TokenInvalid, match="token has expired"):
        verify(issuer, token)
    assert verify(issuer, token, now=NOW - 120).subject == "alice"


def test_token_uses_current_key_after_rotation(
    issuer: DemoIssuer, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issuer.rotate()
    assert run(["--sub", "alice", "--state", str(state_dir)]) == 0
    token = printed_token(capsys)
    header_segment = token.split(".")[0]
    header = json.loads(parse_segment(header_segment))
    assert header["kid"] == issuer.kid


def parse_segment(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


# Invalid arguments


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sub", ""], "ringwall token: --sub: must be a non-empty string"),
        (["--sub", "alice", "--role", "a b"], "ringwall token: --role: invalid value 'a b'"),
        (["--sub", "alice", "--scope", "x", "--scope", "x"], "--scope: duplicate value 'x'"),
        (["--sub", "alice", "--aud", ""], "ringwall token: --aud: must be a non-empty string"),
    ],
)
def test_invalid_claim_values(
    issuer: DemoIssuer,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert run([*argv, "--state", str(state_dir)]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert message in output.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--ttl", "86401"],
        ["--ttl", "-86401"],
        ["--ttl", "1.5"],
        ["--ttl", "5m"],
        ["--accounts", "a,,b"],
        ["--accounts", ""],
    ],
)
def test_invalid_options_rejected_by_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["token", "--sub", "alice", *argv])
    assert raised.value.code == 2
    assert f"argument {argv[0]}: invalid" in capsys.readouterr().err


def test_sub_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["token"])
    assert "--sub" in capsys.readouterr().err


def test_parse_ttl_bounds() -> None:
    assert parse_ttl("86400") == 86400
    assert parse_ttl("-86400") == -86400
    assert parse_ttl("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="-86400 to 86400 seconds"):
        parse_ttl("86401")


def test_parse_accounts() -> None:
    assert parse_accounts("acc-1") == ["acc-1"]
    assert parse_accounts(" acc-1 , acc-2 ") == ["acc-1", "acc-2"]
    with pytest.raises(argparse.ArgumentTypeError, match="separated by commas"):
        parse_accounts("acc-1,")
