"""`ringwall revoke`: the revocation file and the audit record it writes."""

import argparse
import json
from pathlib import Path

import pytest

from ringwall.gateway.revocation import RevocationList, parse_revocations
from ringwall.revoke_cli import add_revoke_parser, run_revoke
from tests.support.tokens import ISSUER, RsaIssuer, claims


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_revoke_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["revoke", *argv])


def test_revoke_by_token(tmp_path: Path) -> None:
    token = RsaIssuer().token(**claims(jti="j-1"))
    file = tmp_path / "revocations.json"
    audit = tmp_path / "audit.log"
    assert (
        run_revoke(parse(["--token", token, "--file", str(file), "--audit-log", str(audit)])) == 0
    )
    entries = parse_revocations(file.read_text(), "test")
    assert [(e.issuer, e.jti) for e in entries] == [(ISSUER, "j-1")]
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    record = json.loads(audit.read_text())
    assert record["action"] == "token.revoked"
    assert RevocationList(str(file)).is_revoked(ISSUER, "j-1")
    assert not RevocationList(str(file)).is_revoked(ISSUER, "j-2")


def test_revoke_by_name_and_expiry(tmp_path: Path) -> None:
    file = tmp_path / "r.json"
    args = [
        "--issuer",
        "i",
        "--jti",
        "old",
        "--until",
        "100",
        "--file",
        str(file),
        "--audit-log",
        str(tmp_path / "a"),
    ]
    assert run_revoke(parse(args)) == 0
    args = [
        "--issuer",
        "i",
        "--jti",
        "new",
        "--file",
        str(file),
        "--audit-log",
        str(tmp_path / "a"),
    ]
    assert run_revoke(parse(args)) == 0
    assert [e.jti for e in parse_revocations(file.read_text(), "t")] == ["new"]


@pytest.mark.parametrize("argv", [["--issuer", "i"], ["--token", "not-a-token"], []])
def test_revoke_needs_a_target(tmp_path: Path, argv: list[str]) -> None:
    assert run_revoke(parse([*argv, "--file", str(tmp_path / "r.json")])) == 2


def test_revoke_in_redis(tmp_path: Path) -> None:
    import uuid

    import redis

    key = f"ringwall-test:{uuid.uuid4().hex}"
    token = RsaIssuer().token(**claims(jti="j-redis"))
    args = [
        "--token",
        token,
        "--redis",
        "redis://127.0.0.1:6379/0",
        "--redis-key",
        key,
        "--audit-log",
        str(tmp_path / "audit.log"),
    ]
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        assert run_revoke(parse(args)) == 0
        assert client.zrange(key, 0, -1) == [f"{ISSUER}\x00j-redis".encode()]
    finally:
        client.delete(key)
        client.close()


def test_revocation_outlives_the_leeway(tmp_path: Path) -> None:
    from ringwall.gateway.auth.jwt import MAX_LEEWAY

    token_claims = claims(jti="j-late")
    token = RsaIssuer().token(**token_claims)
    file = tmp_path / "r.json"
    assert (
        run_revoke(
            parse(["--token", token, "--file", str(file), "--audit-log", str(tmp_path / "a")])
        )
        == 0
    )
    [entry] = parse_revocations(file.read_text(), "t")
    assert entry.until == token_claims["exp"] + MAX_LEEWAY


def test_revoke_api_key_id(tmp_path: Path) -> None:
    from ringwall.gateway.authentication import API_KEY_REVOCATION_ISSUER

    file = tmp_path / "r.json"
    args = ["--api-key-id", "abcdefghijkl", "--file", str(file), "--audit-log", str(tmp_path / "a")]
    assert run_revoke(parse(args)) == 0
    assert RevocationList(str(file)).is_revoked(API_KEY_REVOCATION_ISSUER, "abcdefghijkl")
