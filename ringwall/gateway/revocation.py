"""Revoked tokens, by issuer and jti, kept in a file that every worker rereads.

A revocation names the token by issuer and `jti`, never by the token text:
an ECDSA token has more than one valid signature, so a revoked token would
otherwise come back with its signature changed. An entry is kept until the
token would have expired anyway. `ringwall revoke` writes the file. Each
worker checks it for changes at most once a second, so a revocation takes
effect in every worker of the machine within about a second.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ringwall.gateway.auth.api_keys import write_file_atomically

log = logging.getLogger("ringwall.auth")

FORMAT_VERSION = 1
CHECK_SECONDS = 1.0


class RevocationFileError(Exception):
    """A revocation file that cannot be read as one."""


@dataclass(frozen=True, slots=True)
class RevokedToken:
    issuer: str
    jti: str
    until: float  # the token's exp: after it the entry is dropped


def parse_revocations(text: str, source: str) -> list[RevokedToken]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RevocationFileError(f"{source}: invalid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise RevocationFileError(f"{source}: expected an object with version {FORMAT_VERSION}")
    entries = document.get("tokens")
    if not isinstance(entries, list):
        raise RevocationFileError(f"{source}: tokens must be a list")
    tokens = []
    for index, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("issuer"), str)
            and isinstance(entry.get("jti"), str)
            and isinstance(entry.get("until"), int | float)
            and not isinstance(entry.get("until"), bool)
        ):
            raise RevocationFileError(f"{source}: tokens[{index}] needs issuer, jti and until")
        tokens.append(RevokedToken(entry["issuer"], entry["jti"], float(entry["until"])))
    return tokens


def format_revocations(tokens: list[RevokedToken]) -> str:
    entries = [{"issuer": t.issuer, "jti": t.jti, "until": t.until} for t in tokens]
    return json.dumps({"version": FORMAT_VERSION, "tokens": entries}, indent=2) + "\n"


def add_revocation(path: Path, token: RevokedToken, now: float) -> None:
    """Add `token` to the file at `path`, dropping entries that have expired."""
    tokens = parse_revocations(path.read_text("utf-8"), str(path)) if path.exists() else []
    kept = [t for t in tokens if t.until > now and (t.issuer, t.jti) != (token.issuer, token.jti)]
    kept.append(token)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file_atomically(path, format_revocations(kept))


class RevocationList:
    """The revoked tokens of a file, reread when it changes."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._revoked: dict[tuple[str, str], float] = {}
        self._stamp: tuple[float, int] | None = None
        self._checked = float("-inf")

    def is_revoked(self, issuer: str | None, jti: str | None) -> bool:
        now = self._clock()
        if now - self._checked >= CHECK_SECONDS:
            self._reload(now)
        if issuer is None or jti is None or not self._revoked:
            return False
        until = self._revoked.get((issuer, jti))
        return until is not None and until > now

    def _reload(self, now: float) -> None:
        self._checked = now
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            self._revoked, self._stamp = {}, None
            return
        stamp = (status.st_mtime, status.st_size)
        if stamp == self._stamp:
            return
        try:
            tokens = parse_revocations(self.path.read_text("utf-8"), str(self.path))
        except (OSError, RevocationFileError) as exc:
            # Keep what was loaded: a broken file must not un-revoke tokens.
            log.error(
                "cannot read the revocation file, keeping the loaded list",
                extra={"error": str(exc)},
            )
            return
        self._revoked = {(t.issuer, t.jti): t.until for t in tokens}
        self._stamp = stamp
