"""A loaded configuration compiled into what a worker needs per request.

A worker uses one `Runtime` at a time. A reload builds a new one and swaps
the reference. Each request keeps the runtime it started with, so requests
in flight finish on the old configuration.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ringwall.audit import AuditLog, JsonLinesAuditSink
from ringwall.config.model import AuditLogConfig, AuthConfig, Config, IssuerConfig
from ringwall.edge.bans import BanBackend, Bans, EmbeddedBans
from ringwall.edge.client_ip import ClientAddressResolver
from ringwall.edge.connections import ConnectionLimits
from ringwall.edge.cors import CorsLayer, CorsPolicy
from ringwall.edge.rate_limit import EdgeRateLimitLayer, RouteRateLimitLayer
from ringwall.edge.waf import engines as waf_engines
from ringwall.edge.waf.layer import WafLayer
from ringwall.edge.waf.security_log import SecurityLog
from ringwall.exchange import Exchange
from ringwall.gateway.auditing import AuditLayer
from ringwall.gateway.auth.jwk import VerificationKey, verification_key
from ringwall.gateway.auth.jwks_cache import JwksCache
from ringwall.gateway.auth.jws import StaticKeySet
from ringwall.gateway.auth.jwt import ClaimRules
from ringwall.gateway.authentication import ApiKeys, AuthenticationLayer, Issuer, KeySource
from ringwall.gateway.authorization import AuthorizationLayer
from ringwall.gateway.body_limit import BodyLimitLayer
from ringwall.gateway.decompression import DecompressionLayer, DecompressPolicy
from ringwall.gateway.quota import QuotaLayer
from ringwall.gateway.revocation import RevocationList
from ringwall.gateway.routing import Router, RoutingLayer, host_matcher
from ringwall.gateway.security_headers import SecurityHeaders
from ringwall.gateway.upstream_token import JwksEndpointLayer, UpstreamTokenSigner
from ringwall.gateway.validation.layer import RouteValidation, ValidationLayer
from ringwall.http.headers import GATEWAY_OWNED, canonical_name
from ringwall.limits.limiter import CompiledLimit, KeyBuilder, Limiter
from ringwall.pipeline import Layer, Pipeline
from ringwall.server.jwks_fetch import JwksSource
from ringwall.server.redis_revocations import RedisRevocationList
from ringwall.server.upstream import UpstreamRuntime
from ringwall.state.shared import SharedStore

if TYPE_CHECKING:
    from ringwall.state.redis_client import RedisClient

_REQUEST_ID_BYTES = bytes(
    sorted(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")
)


class RequestIds:
    """Unique request ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = f"{secrets.token_hex(6)}{os.getpid() & 0xFFFF:04x}-"
        self._counter = 0

    def next(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter:x}"


def valid_request_id(value: bytes) -> bool:
    """Return True for a request id a trusted proxy may pass on: 1-128 safe characters."""
    return 0 < len(value) <= 128 and not value.translate(None, _REQUEST_ID_BYTES)


class Runtime:
    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        shared: SharedStore | None = None,
        worker_index: int = 0,
    ) -> None:
        self.config = config
        server = config.server
        self.limits = server.limits
        self.timeouts = server.timeouts
        self.request_id_header = server.request_id_header.encode("ascii")
        self.request_id_lower = self.request_id_header.lower()
        owned = {canonical_name(self.request_id_header)}
        if config.auth.api_keys is not None:
            # The upstream never needs the key, under any spelling of its name.
            owned.add(canonical_name(config.auth.api_keys.header.encode("ascii")))
        self.owned_headers = GATEWAY_OWNED | owned
        self.reject_header_name_variants = server.reject_header_name_variants
        self.served_hosts = host_matcher(server.hosts)
        self.client_addresses = ClientAddressResolver(server.trusted_proxies)
        self.router = Router(config.routes)
        # The body limit before a request's route is known: the largest any route allows.
        self.max_body_bytes = max(
            [self.limits.max_body_bytes]
            + [r.max_body_bytes for r in config.routes if r.max_body_bytes is not None]
        )
        self.upstreams = {
            name: UpstreamRuntime(name, upstream, loop)
            for name, upstream in config.upstreams.items()
        }
        self.preserve_host = {
            name: upstream.preserve_host for name, upstream in config.upstreams.items()
        }
        self.jwks_sources: list[JwksSource] = []
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()
        self._closers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._closed = False
        self._released = False

        self.audit = self._audit_log(config.logging.audit, loop)
        self.upstream_token: UpstreamTokenSigner | None = None
        before_routing: list[Layer] = []
        if config.auth.upstream_token is not None:
            self.upstream_token = UpstreamTokenSigner(config.auth.upstream_token)
            before_routing.append(JwksEndpointLayer(self.upstream_token))
        self.shared = shared
        self._owns_shared = False
        self._redis: RedisClient | None = None
        limiter = self._limiter(config, loop)
        self.connection_limits = self._connection_limits(config, worker_index)
        # Checked at accept and before the layers (see ClientConnection).
        self.bans = self._bans(config, loop)
        after_routing: list[Layer] = []
        quota_layer: QuotaLayer | None = None
        if limiter is not None:
            store = config.limits.store
            edge = tuple(
                CompiledLimit.compile(limit, "edge", store.on_failure)
                for limit in config.limits.edge
            )
            if edge:
                before_routing.append(EdgeRateLimitLayer(limiter, edge))
            by_ip: dict[str, tuple[CompiledLimit, ...]] = {}
            by_caller: dict[str, tuple[CompiledLimit, ...]] = {}
            for route in config.routes:
                compiled = [
                    (limit, CompiledLimit.compile(limit, route.name, store.on_failure))
                    for limit in route.limits
                ]
                ip_limits = tuple(c for limit, c in compiled if not limit.after_authentication)
                caller_limits = tuple(c for limit, c in compiled if limit.after_authentication)
                if ip_limits:
                    by_ip[route.name] = ip_limits
                if caller_limits:
                    by_caller[route.name] = caller_limits
            if by_ip:
                after_routing.append(RouteRateLimitLayer(limiter, by_ip))
            if by_caller:
                quota_layer = QuotaLayer(limiter, by_caller)
        self.cors = {route.name: CorsPolicy(route.cors) for route in config.routes if route.cors}
        if self.cors:
            after_routing.append(CorsLayer(self.cors))
        self.security_headers = {
            route.name: SecurityHeaders(route.security_headers or config.security_headers, False)
            for route in config.routes
        }
        # The same fields with Strict-Transport-Security, for HTTPS connections.
        self.security_headers_https = {
            route.name: SecurityHeaders(route.security_headers or config.security_headers, True)
            for route in config.routes
        }
        hsts = config.security_headers.hsts
        self.hsts_field: tuple[tuple[bytes, bytes], ...] = ()
        if hsts.enabled:
            value = f"max-age={int(hsts.max_age)}"
            if hsts.include_subdomains:
                value += "; includeSubDomains"
            if hsts.preload:
                value += "; preload"
            self.hsts_field = ((b"Strict-Transport-Security", value.encode("ascii")),)
        after_routing += [
            # A declared body over the limit is refused before any credential
            # is checked, as nginx does with client_max_body_size.
            BodyLimitLayer(self.limits.max_body_bytes),
        ]
        self._security_log: SecurityLog | None = None
        self.waf = self._waf(config)
        decompress = self._decompress_policies(config)
        # A body is decoded before the WAF inspects it. On a route without a
        # WAF it is decoded after authentication, so that an anonymous client
        # cannot make the gateway inflate bodies on an authenticated route.
        waf = self.waf
        before_waf = {
            route.name: decompress.pop(route.name)
            for route in self.router.routes
            if waf is not None and route.name in decompress and waf.applies_to(route)
        }
        if before_waf:
            after_routing.append(DecompressionLayer(before_waf))
        if self.waf is not None:
            after_routing.append(self.waf)
        after_routing.append(self._authentication(config.auth, loop))
        if decompress:
            after_routing.append(DecompressionLayer(decompress))
        validations = {
            route.name: RouteValidation(route.validate_)
            for route in config.routes
            if route.validate_ is not None
        }
        if validations:
            after_routing.append(ValidationLayer(validations))
        after_routing.append(AuthorizationLayer())
        if quota_layer is not None:
            after_routing.append(quota_layer)
        if self.audit is not None:
            after_routing.append(AuditLayer(self.audit))
        self.pipeline = Pipeline(
            before_routing, RoutingLayer(self.router), after_routing, self.router.routes
        )

    def _connection_limits(self, config: Config, worker_index: int) -> ConnectionLimits | None:
        connections = config.limits.connections
        if connections.per_ip is None and connections.total is None:
            return None
        shared = self._shared_store(config)
        keys = KeyBuilder(config.limits.ipv6_prefix)
        return ConnectionLimits(shared, worker_index, keys, connections.per_ip, connections.total)

    def _shared_store(self, config: Config) -> SharedStore:
        if self.shared is None:
            # One process without a supervisor (tests, embedding): a private store.
            self.shared = SharedStore.create(config.limits.store.max_keys, workers=1)
            self._owns_shared = True
        return self.shared

    def _decompress_policies(self, config: Config) -> dict[str, DecompressPolicy]:
        """Return the decompression policy of each route with `decompress`, by route name."""
        policies = {}
        for route in config.routes:
            settings = route.decompress
            if settings is None:
                continue
            max_bytes = settings.max_bytes
            if max_bytes is None:
                max_bytes = (
                    route.max_body_bytes
                    if route.max_body_bytes is not None
                    else self.limits.max_body_bytes
                )
            policies[route.name] = DecompressPolicy(
                settings.encodings, max_bytes, settings.max_ratio
            )
        return policies

    def _waf(self, config: Config) -> WafLayer | None:
        """Return the WAF layer, when the gateway or a route sets a WAF policy."""
        policies = waf_engines.policies(config)
        if not policies:
            return None
        routes = {}
        for route in config.routes:
            policy = route.waf or config.waf
            if policy is not None and policy.enabled:
                routes[route.name] = waf_engines.engine_for(policy)
        destination = config.logging.security
        log = (
            SecurityLog.to_stdout()
            if destination == "stdout"
            else SecurityLog.to_file(Path(destination))
        )
        self._security_log = log
        default = (
            waf_engines.engine_for(config.waf)
            if config.waf is not None and config.waf.enabled
            else None
        )
        disabled = frozenset(
            route.name for route in config.routes if route.waf is not None and not route.waf.enabled
        )
        return WafLayer(
            log,
            default=default,
            routes=routes,
            disabled=disabled,
            server_address=config.server.listen,
        )

    def _redis_client(self, config: Config) -> RedisClient:
        """Return the Redis client of `limits.store`, one per runtime, made on first use."""
        if self._redis is None:
            from ringwall.state.redis_client import RedisClient

            store = config.limits.store
            assert store.url is not None
            self._redis = RedisClient.from_url(
                store.url, timeout=store.timeout, ca_file=store.ca_file, tls=store.tls
            )
            self._closers.append(self._redis.close)
        return self._redis

    def _bans(self, config: Config, loop: asyncio.AbstractEventLoop) -> Bans | None:
        """Return the ban list and rules, when there are rules or an admin API to add bans."""
        limits = config.limits
        if not limits.bans and config.admin is None:
            return None
        backend: BanBackend
        if limits.store.kind == "redis":
            from ringwall.state.redis_bans import RedisBans

            redis_bans = RedisBans(
                self._redis_client(config),
                limits.store.key_prefix,
                fallback=EmbeddedBans(self._shared_store(config)),
            )
            loop.call_soon(redis_bans.start, loop)
            self._closers.append(redis_bans.close)
            backend = redis_bans
        else:
            backend = EmbeddedBans(self._shared_store(config))
        return Bans(
            backend,
            limits.bans,
            KeyBuilder(limits.ipv6_prefix),
            self.audit,
            spawn=self._run_task,
        )

    def _limiter(self, config: Config, loop: asyncio.AbstractEventLoop) -> Limiter | None:
        """Return the limiter of the configured store, or None when nothing is limited."""
        limits = config.limits
        if not limits.edge and not any(route.limits for route in config.routes):
            return None
        store = limits.store
        shared = self._shared_store(config)
        keys = KeyBuilder(limits.ipv6_prefix)
        if store.kind == "embedded":
            return Limiter(shared, keys, retry_after_on_failure=limits.store_retry_after)
        # Imported here: a gateway without Redis never loads the client.
        from ringwall.state.redis_client import RedisUnavailable
        from ringwall.state.redis_limits import RedisLimits

        remote = RedisLimits(self._redis_client(config), prefix=f"{store.key_prefix}rl:".encode())
        return Limiter(
            shared,
            keys,
            remote=remote,
            instances=store.instances,
            retry_after_on_failure=limits.store_retry_after,
            unavailable=(RedisUnavailable,),
        )

    def _authentication(
        self, auth: AuthConfig, loop: asyncio.AbstractEventLoop
    ) -> AuthenticationLayer:
        issuers = {name: self._issuer(name, issuer, loop) for name, issuer in auth.issuers.items()}
        api_keys = ApiKeys(auth.api_keys) if auth.api_keys is not None else None
        revocations: RevocationList | RedisRevocationList | None = None
        if auth.revocations is not None and auth.revocations.file is not None:
            revocations = RevocationList(auth.revocations.file)
        elif auth.revocations is not None and auth.revocations.redis is not None:
            redis_list = RedisRevocationList(auth.revocations.redis, auth.revocations.redis_key)
            loop.call_soon(redis_list.start, loop)
            self._closers.append(redis_list.close)
            revocations = redis_list
        return AuthenticationLayer(auth, issuers, api_keys, revocations=revocations)

    @staticmethod
    def _audit_log(config: AuditLogConfig, loop: asyncio.AbstractEventLoop) -> AuditLog | None:
        if config.destination == "off":
            return None
        audit = AuditLog(JsonLinesAuditSink(config.destination), on_failure=config.on_failure)
        audit.batch_on(loop)
        return audit

    def _issuer(self, name: str, config: IssuerConfig, loop: asyncio.AbstractEventLoop) -> Issuer:
        rules = ClaimRules(
            issuer=config.issuer,
            audiences=frozenset(config.audiences),
            leeway=config.leeway,
            max_lifetime=config.max_lifetime,
            required_claims=frozenset(config.required_claims),
        )
        keys: KeySource
        if config.hmac_secret is not None:
            secret = config.hmac_secret.reveal().encode("utf-8")
            keys = _StaticKeys(StaticKeySet([verification_key(secret)]))
        else:
            assert config.jwks is not None
            cache = JwksCache(
                ttl=config.cache_ttl, cooldown=config.refetch_cooldown, max_stale=config.max_stale
            )
            source = JwksSource(
                config.jwks, cache=cache, timeout=config.fetch_timeout, ca_file=config.ca_file
            )
            self.jwks_sources.append(source)
            loop.call_soon(self._run_task, source.refresh())
            keys = source
        return Issuer(name, config, rules, frozenset(config.algorithms), keys)

    def upstream_request_head(
        self, exchange: Exchange, authority: str, content_length: int | None
    ) -> bytes:
        """Build the request head sent to a target at `authority`.

        The body is framed with `content_length` when given, else chunked if the
        request has a body, else not at all.
        """
        route = exchange.route
        assert route is not None
        target = exchange.upstream_path.encode("ascii")
        if exchange.query:
            target += b"?" + exchange.query
        if exchange.host_header and self.preserve_host[route.upstream]:
            host = exchange.host_header
        else:
            host = authority.encode("ascii")
        client_ip = exchange.client_ip.encode("ascii")
        parts = [
            b"%b %b HTTP/1.1\r\nHost: %b\r\n" % (exchange.method.encode("ascii"), target, host),
            *[b"%b: %b\r\n" % field for field in exchange.forward_headers],
            b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\n"
            % (client_ip, b"http" if exchange.tls is None else b"https"),
        ]
        if exchange.host:
            parts.append(b"X-Forwarded-Host: %b\r\n" % exchange.host.encode("ascii"))
        parts.append(
            b"X-Real-IP: %b\r\n%b: %b\r\n"
            % (client_ip, self.request_id_header, exchange.request_id.encode("ascii"))
        )
        if exchange.identity is not None:
            parts.append(exchange.identity.header_block)
            if self.upstream_token is not None:
                token = self.upstream_token.token_for(exchange.identity).encode("ascii")
                parts.append(b"%b: %b\r\n" % (self.upstream_token.header, token))
        if content_length is not None:
            parts.append(b"Content-Length: %d\r\n" % content_length)
        elif exchange.has_body:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if exchange.upgrade is not None:
            parts.append(b"Connection: Upgrade\r\nUpgrade: %b\r\n" % exchange.upgrade)
        parts.append(b"\r\n")
        return b"".join(parts)

    async def shutdown(self) -> None:
        """Close everything, and wait for connections to key and state stores to end."""
        self.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.release()

    def release(self) -> None:
        """Close what requests in flight may still use; call once none are left."""
        if self._released:
            return
        self._released = True
        if self.audit is not None:
            self.audit.close()
        if self._security_log is not None:
            self._security_log.close()
        if self._owns_shared and self.shared is not None:
            self.shared.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.waf is not None:
            self.waf.close()
        for upstream in self.upstreams.values():
            upstream.close()
        for source in self.jwks_sources:
            if not self._loop.is_closed():
                self._run_task(source.close())
        for closer in self._closers:
            if not self._loop.is_closed():
                self._run_task(closer())

    def _run_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Keys are loaded before the first token arrives; failures are logged by the source.
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def sweep(self, now: float) -> None:
        for upstream in self.upstreams.values():
            upstream.sweep(now)


class _StaticKeys:
    """The KeySource of an issuer whose keys are configured locally, such as an HMAC secret."""

    def __init__(self, keys: StaticKeySet) -> None:
        self._keys = keys

    def cached_keys(self, kid: str | None, alg: str) -> list[VerificationKey]:
        return list(self._keys.find(kid, alg))

    async def keys_for(self, kid: str | None, alg: str) -> list[VerificationKey]:
        return self.cached_keys(kid, alg)
