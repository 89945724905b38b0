"""`ringwall revoke`: revoke a token by issuer and jti, for every worker within a second."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from redis.exceptions import RedisError

from ringwall.audit import AuditRecord, AuditWriteError, JsonLinesAuditSink
from ringwall.gateway.auth.jwt import MAX_LEEWAY
from ringwall.gateway.authentication import API_KEY_REVOCATION_ISSUER
from ringwall.gateway.revocation import RevocationFileError, RevokedToken, add_revocation
from ringwall.server.redis_revocations import DEFAULT_KEY as REDIS_DEFAULT_KEY
from ringwall.server.redis_revocations import add_revocation as add_redis_revocation

DEFAULT_REVOCATION_FILE = Path(".ringwall") / "revocations.json"
DEFAULT_AUDIT_FILE = Path(".ringwall") / "audit.log"


def add_revoke_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "revoke", help="revoke a token (by issuer and jti) until it expires"
    )
    parser.add_argument("--token", help="the token itself; its iss, jti and exp are read from it")
    parser.add_argument("--issuer", help="issuer of the token (with --jti)")
    parser.add_argument("--jti", help="jti claim of the token (with --issuer)")
    parser.add_argument(
        "--api-key-id",
        help="id of an API key to revoke in the revocation store, for every gateway instance",
    )
    parser.add_argument(
        "--until",
        type=float,
        help="end of the revocation in seconds since the epoch (default: 1 day)",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=DEFAULT_REVOCATION_FILE,
        help=f"revocation file named by auth.revocations.file (default {DEFAULT_REVOCATION_FILE})",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="revoke in Redis (auth.revocations.redis) instead of the file",
    )
    parser.add_argument(
        "--redis-key",
        default=REDIS_DEFAULT_KEY,
        help=f"sorted set named by auth.revocations.redis_key (default {REDIS_DEFAULT_KEY})",
    )
    parser.add_argument(
        "--audit-log",
        type=Path,
        default=DEFAULT_AUDIT_FILE,
        help=f"audit log for the record of this action (default {DEFAULT_AUDIT_FILE})",
    )


def run_revoke(arguments: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> int:
    now = clock()
    try:
        token = _target(arguments, now)
    except ValueError as exc:
        print(f"ringwall revoke: {exc}", file=sys.stderr)
        return 2
    try:
        if arguments.redis:
            asyncio.run(
                add_redis_revocation(
                    arguments.redis, arguments.redis_key, token.issuer, token.jti, token.until, now
                )
            )
        else:
            add_revocation(arguments.file, token, now)
    except (OSError, RevocationFileError, RedisError) as exc:
        where = "Redis" if arguments.redis else str(arguments.file)
        print(f"ringwall revoke: cannot update {where}: {exc}", file=sys.stderr)
        return 1
    record_admin_action(arguments.audit_log, "token.revoked", f"{token.issuer} {token.jti}", now)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.until))
    print(f"revoked token {token.jti} of {token.issuer} until {until}")
    return 0


def _target(arguments: argparse.Namespace, now: float) -> RevokedToken:
    if arguments.api_key_id:
        # A key has no expiry the store can see, so the entry lasts ten years.
        return RevokedToken(
            API_KEY_REVOCATION_ISSUER, arguments.api_key_id, now + 10 * 365 * 86_400
        )
    if arguments.token:
        claims = _unverified_claims(arguments.token)
        issuer, jti, exp = claims.get("iss"), claims.get("jti"), claims.get("exp")
        if not isinstance(issuer, str) or not isinstance(jti, str):
            raise ValueError("the token has no iss or jti claim, so it cannot be revoked by name")
        # The token stays acceptable for up to the issuer's leeway past exp.
        default_until = float(exp) + MAX_LEEWAY if isinstance(exp, int | float) else now + 86_400
        until = arguments.until or default_until
        return RevokedToken(issuer, jti, until)
    if not arguments.issuer or not arguments.jti:
        raise ValueError("give --token, --api-key-id, or both --issuer and --jti")
    return RevokedToken(arguments.issuer, arguments.jti, arguments.until or now + 86_400)


def _unverified_claims(token: str) -> dict[str, object]:
    # Only the names are read; revoking a forged token does no harm.
    try:
        segment = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError) as exc:
        raise ValueError(f"invalid token: {exc}") from None
    if not isinstance(payload, dict):
        raise ValueError("invalid token: the payload is not a JSON object")
    return payload


def record_admin_action(path: Path, action: str, target: str, now: float) -> None:
    """Append an administrative action to the audit log; warn, but keep going, if that fails."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sink = JsonLinesAuditSink(str(path))
        try:
            sink.write(AuditRecord.command_action(time=now, action=action, target=target))
        finally:
            sink.close()
    except (OSError, AuditWriteError) as exc:
        print(f"warning: the audit record was not written to {path}: {exc}", file=sys.stderr)
