"""Authentication: who is calling, proven by a bearer token, an API key or a client certificate.

Per route, `auth` lists the accepted methods. Without credentials the
request gets 401, unless the route's authentication is optional; then it
continues as anonymous. Invalid credentials always get 401, never anonymous.
When a request carries several, the first present one in the order bearer
token, API key, client certificate decides. The certificate comes last
because it belongs to the connection, and a request sent over it may carry
a more specific credential, such as the token of an end user.
A verified token is cached, keyed by its whole text, until it expires, so
a client reusing its token skips the signature check.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ringwall.config.model import ApiKeysConfig, AuthConfig, IssuerConfig, RouteAuth
from ringwall.errors import Unauthorized
from ringwall.gateway.auth.api_keys import ApiKeyInvalid, ApiKeyStore, KeyFileError, read_api_key
from ringwall.gateway.auth.jwk import (
    JsonInvalid,
    VerificationKey,
    decode_base64url,
    load_json_object,
)
from ringwall.gateway.auth.jws import KeyLookup, StaticKeySet, TokenInvalid, verify_compact
from ringwall.gateway.auth.jwt import ClaimRules, validate_claims
from ringwall.gateway.auth.mtls import ClientCertificates
from ringwall.gateway.identity import Identity, claim_strings
from ringwall.tls.client_identity import ClientCertificateRejected

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute

log = logging.getLogger("ringwall.auth")

LAYER = "authentication"
# The issuer name under which API key ids are listed in the revocation store.
API_KEY_REVOCATION_ISSUER = "ringwall:api-key"
_BEARER = b"bearer "
# How often the API key file is checked for changes, such as a revocation.
_KEY_FILE_CHECK_SECONDS = 1.0


class RevocationCheck(Protocol):
    """A list of revoked tokens, by issuer and jti, checked in memory."""

    def is_revoked(self, issuer: str | None, jti: str | None) -> bool: ...


class KeySource(Protocol):
    """Keys of one issuer: returned from memory when possible, else after a fetch."""

    def cached_keys(self, kid: str | None, alg: str) -> list[VerificationKey] | None: ...

    async def keys_for(self, kid: str | None, alg: str) -> list[VerificationKey]: ...


@dataclass(frozen=True)
class Issuer:
    name: str
    config: IssuerConfig
    rules: ClaimRules
    algorithms: frozenset[str]
    keys: KeySource


class _KeysNeeded(Exception):
    def __init__(self, kid: str | None, alg: str) -> None:
        self.kid = kid
        self.alg = alg


class _CachedKeyLookup:
    """A KeyLookup over an issuer's cached keys that raises _KeysNeeded when they miss."""

    def __init__(self, source: KeySource) -> None:
        self.source = source

    def find(self, kid: str | None, alg: str) -> Sequence[VerificationKey]:
        keys = self.source.cached_keys(kid, alg)
        if keys is None:
            raise _KeysNeeded(kid, alg)
        return keys


class ApiKeys:
    """The API key file of a gateway, reloaded when it changes."""

    def __init__(self, config: ApiKeysConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.header = config.header.lower().encode("ascii")
        self._path = Path(config.file)
        self._clock = clock
        self._store = ApiKeyStore(prefix=config.prefix)
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._reload()

    def verify(self, presented: str) -> Identity:
        now = self._clock()
        if now - self._checked >= _KEY_FILE_CHECK_SECONDS:
            self._reload()
        record = self._store.verify(presented, now)
        claims = {"sub": record.owner}
        return Identity(
            subject=record.owner,
            method="api_key",
            issuer=None,
            key_id=record.id,
            roles=frozenset(record.roles),
            scopes=frozenset(record.scopes),
            claims=claims,
            expires_at=record.expires_at,
        )

    def _reload(self) -> None:
        self._checked = self._clock()
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            if self._stamp is not None:
                log.error(
                    "API key file disappeared, no key is accepted", extra={"file": str(self._path)}
                )
            self._store = ApiKeyStore(prefix=self.config.prefix)
            self._stamp = None
            return
        stamp = (status.st_mtime, status.st_size)
        if stamp == self._stamp:
            return
        try:
            self._store = ApiKeyStore.load(self._path, prefix=self.config.prefix)
        except (KeyFileError, OSError) as exc:
            # Keep the keys already loaded: a half-written or broken file must
            # not turn into "every key is invalid" or "no check at all".
            log.error(
                "cannot load the API key file, keeping the loaded keys", extra={"error": str(exc)}
            )
            return
        self._stamp = stamp
        log.info("API keys loaded", extra={"file": str(self._path), "keys": len(self._store)})


class TokenCache:
    """Identities of verified tokens, keyed by the whole token, never kept past `exp`.

    A dict keyed by the token bytes compares the whole token on every hit
    (after Python's keyed SipHash of it), so a different token, including the
    same claims with another valid ECDSA signature, is a miss. The oldest
    entry goes first when the cache is full.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[bytes, tuple[str, Identity]] = {}

    def get(self, token: bytes, now: float) -> tuple[str, Identity] | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        expires_at = entry[1].expires_at
        if expires_at is not None and expires_at <= now:
            del self._entries[token]
            return None
        return entry

    def put(self, token: bytes, issuer_name: str, identity: Identity) -> None:
        if not self.size:
            return
        entries = self._entries
        if len(entries) >= self.size:
            del entries[next(iter(entries))]
        entries[bytes(token)] = (issuer_name, identity)


class AuthenticationLayer:
    name = LAYER

    def __init__(
        self,
        config: AuthConfig,
        issuers: dict[str, Issuer],
        api_keys: ApiKeys | None,
        clock: Callable[[], float] = time.time,
        revocations: RevocationCheck | None = None,
    ) -> None:
        self.config = config
        self.issuers = issuers
        self._all_issuers = tuple(issuers)
        self.api_keys = api_keys
        self.revocations = revocations
        self.tokens = TokenCache(config.token_cache_size)
        self.clock = clock
        # Built here, not passed in like the API keys: it reads no files.
        self.certificates = ClientCertificates(config.mtls) if config.mtls is not None else None

    def applies_to(self, route: CompiledRoute) -> bool:
        return not route.route.auth.public

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        route = exchange.route
        assert route is not None
        auth = route.route.auth
        if auth.public:
            return None
        bearer, api_key_values = self._credentials(exchange, auth)
        if bearer is not None and "jwt" in auth.methods:
            return self._authenticate_token(exchange, auth, bearer)
        if api_key_values and "api_key" in auth.methods and self.api_keys is not None:
            self._authenticate_api_key(exchange, auth, api_key_values)
            return None
        certificate = exchange.tls.client_certificate if exchange.tls is not None else None
        if certificate is not None and "mtls" in auth.methods and self.certificates is not None:
            self._authenticate_certificate(exchange, auth, certificate)
            return None
        # A client certificate does not count as a presented credential here,
        # because it belongs to the connection and not to this request.
        if bearer is not None or api_key_values:
            raise _unauthorized(
                auth, "the credentials are not accepted on this route", invalid=True
            )
        if auth.optional:
            return None
        raise _unauthorized(auth, _missing_reason(exchange, auth), invalid=False)

    def _credentials(self, exchange: Exchange, auth: RouteAuth) -> tuple[bytes | None, list[bytes]]:
        api_key_values = []
        key_header = self.api_keys.header if self.api_keys is not None else None
        if key_header is not None:
            api_key_values = exchange.header_values(key_header)
        if "jwt" not in auth.methods:
            # Not read on this route, and removed before forwarding once a key is verified.
            return None, api_key_values
        authorization = exchange.authorization
        if len(authorization) > 1:
            raise _unauthorized(auth, "more than one Authorization header", invalid=True)
        bearer = None
        if authorization:
            value = authorization[0]
            if value[:7].lower() != _BEARER:
                raise _unauthorized(auth, "the Authorization scheme is not Bearer", invalid=True)
            bearer = value[7:].strip(b" \t")
        return bearer, api_key_values

    def _authenticate_api_key(
        self, exchange: Exchange, auth: RouteAuth, values: list[bytes]
    ) -> None:
        assert self.api_keys is not None
        try:
            exchange.identity = self.api_keys.verify(read_api_key(values))
        except ApiKeyInvalid as exc:
            raise _unauthorized(auth, f"API key rejected: {exc.reason}", invalid=True) from None
        if self.revocations is not None and self.revocations.is_revoked(
            API_KEY_REVOCATION_ISSUER, exchange.identity.key_id
        ):
            # Revoked in the shared store, which reaches instances the key file does not.
            raise _unauthorized(auth, "API key rejected: revoked", invalid=True)
        # An Authorization field the gateway did not verify must not reach the upstream.
        _drop_authorization(exchange)

    def _authenticate_certificate(
        self, exchange: Exchange, auth: RouteAuth, certificate: bytes
    ) -> None:
        assert self.certificates is not None
        try:
            exchange.identity = self.certificates.verify(certificate, self.clock())
        except ClientCertificateRejected as exc:
            # invalid=False: the Bearer challenge's invalid_token error is about
            # a presented token, and this request presented none.
            raise _unauthorized(
                auth, f"client certificate rejected: {exc.reason}", invalid=False
            ) from None
        # An Authorization field the gateway did not verify must not reach the upstream.
        _drop_authorization(exchange)

    def _authenticate_token(
        self, exchange: Exchange, auth: RouteAuth, token: bytes
    ) -> Awaitable[None] | None:
        now = self.clock()
        cached = self.tokens.get(token, now)
        allowed = auth.issuers or self._all_issuers
        if cached is not None and cached[0] in allowed:
            exchange.identity = cached[1]
            self._check_revoked(cached[1], auth)
            self._strip_token(exchange, self.issuers[cached[0]])
            return None
        issuer = self._issuer_for(token, allowed, auth)
        try:
            identity = self._verify(token, issuer, _CachedKeyLookup(issuer.keys), now)
        except _KeysNeeded as need:
            return self._verify_after_fetch(exchange, auth, token, issuer, need)
        except TokenInvalid as exc:
            raise _unauthorized(auth, f"token rejected: {exc.reason}", invalid=True) from None
        exchange.identity = identity  # also names the caller in the audit record of a refusal
        self._check_revoked(identity, auth)
        self._strip_token(exchange, issuer)
        return None

    @staticmethod
    def _strip_token(exchange: Exchange, issuer: Issuer) -> None:
        if not issuer.config.forward_token:
            _drop_authorization(exchange)

    def _check_revoked(self, identity: Identity, auth: RouteAuth) -> None:
        if self.revocations is not None and self.revocations.is_revoked(
            identity.issuer, identity.jti
        ):
            raise _unauthorized(auth, "token rejected: the token was revoked", invalid=True)

    async def _verify_after_fetch(
        self, exchange: Exchange, auth: RouteAuth, token: bytes, issuer: Issuer, need: _KeysNeeded
    ) -> None:
        keys = await issuer.keys.keys_for(need.kid, need.alg)
        try:
            identity = self._verify(token, issuer, StaticKeySet(keys), self.clock())
        except TokenInvalid as exc:
            raise _unauthorized(auth, f"token rejected: {exc.reason}", invalid=True) from None
        exchange.identity = identity
        self._check_revoked(identity, auth)
        self._strip_token(exchange, issuer)

    def _verify(self, token: bytes, issuer: Issuer, keys: KeyLookup, now: float) -> Identity:
        verified = verify_compact(token, keys, issuer.algorithms)
        claims = validate_claims(verified.payload, issuer.rules, now)
        if not claims.subject:
            raise TokenInvalid("the token has no sub claim")
        identity = Identity(
            subject=claims.subject,
            method="jwt",
            issuer=claims.issuer,
            key_id=verified.kid,
            roles=claim_strings(claims.raw, self.config.claims.roles),
            scopes=claim_strings(claims.raw, self.config.claims.scopes),
            claims=claims.raw,
            expires_at=claims.expires_at,
            jti=claims.jti,
        )
        self.tokens.put(token, issuer.name, identity)
        return identity

    def _issuer_for(self, token: bytes, allowed: Sequence[str], auth: RouteAuth) -> Issuer:
        """Pick the issuer named by the token's (not yet verified) iss claim."""
        if len(allowed) == 1:
            return self.issuers[allowed[0]]
        try:
            payload = decode_base64url(token.split(b".")[1].decode("ascii"))
            iss = load_json_object(payload, "token payload").get("iss")
        except (IndexError, UnicodeDecodeError, ValueError, JsonInvalid):
            raise _unauthorized(auth, "token rejected: malformed token", invalid=True) from None
        for name in allowed:
            issuer = self.issuers[name]
            if issuer.config.issuer == iss:
                return issuer
        raise _unauthorized(auth, "token rejected: issuer not accepted on this route", invalid=True)


def _drop_authorization(exchange: Exchange) -> None:
    """Remove the Authorization fields from what is forwarded."""
    if not exchange.authorization:
        return
    forward = exchange.forward_headers
    at = exchange.authorization_at
    if (
        len(exchange.authorization) == 1
        and at < len(forward)
        and forward[at][0].lower() == b"authorization"
    ):
        del forward[at]
        return
    exchange.forward_headers = [
        (name, value) for name, value in forward if name.lower() != b"authorization"
    ]


def _missing_reason(exchange: Exchange, auth: RouteAuth) -> str:
    if "mtls" not in auth.methods:
        return "credentials are missing"
    if exchange.tls is None:
        return "credentials are missing: no client certificate on a plain HTTP connection"
    return "credentials are missing: the TLS handshake had no client certificate"


def _unauthorized(auth: RouteAuth, reason: str, *, invalid: bool) -> Unauthorized:
    """Build a 401 with the challenge that RFC 6750 specifies, and the reason for the log."""
    challenges = []
    if "jwt" in auth.methods:
        challenge = 'Bearer realm="ringwall"'
        if invalid:
            challenge += ', error="invalid_token"'
        challenges.append(challenge)
    if "api_key" in auth.methods:
        challenges.append('ApiKey realm="ringwall"')
    if "mtls" in auth.methods:
        # NOTE: no registered HTTP authentication scheme names TLS client
        # certificates. RFC 9110 (section 15.5.2) still requires a challenge on
        # every 401, so this one is Ringwall's own.
        challenges.append('ClientCertificate realm="ringwall"')
    return Unauthorized(LAYER, reason, headers=(("WWW-Authenticate", ", ".join(challenges)),))
