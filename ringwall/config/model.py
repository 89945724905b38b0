"""Typed, immutable configuration of a gateway.

Every model forbids unknown keys, so a misspelt security setting is an error
at load time instead of a silent default.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ringwall.config.limits import LimitConfig, LimitsConfig
from ringwall.config.response import CorsConfig, SecurityHeadersConfig
from ringwall.config.tls import ClientTlsConfig, TlsListenerConfig
from ringwall.config.types import ByteSize, Duration, ListenAddress, Secret, SecretValue
from ringwall.config.validation import ValidateConfig
from ringwall.config.waf import WafConfig
from ringwall.http.decompress import SUPPORTED_CODINGS
from ringwall.tls.client_identity import NAME_KINDS, IdentityPolicy, NameRule, SubjectSource

KiB = 1024
MiB = 1024 * 1024

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DUPLICATE_ROUTE_NAME = "duplicate_route_name"
# An integer setting: YAML's true and false are not read as 1 and 0.
Count = Annotated[int, Strict()]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def _parse_workers(value: object) -> object:
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256:
        return value
    raise ValueError("expected 'auto' or a number of processes from 1 to 256")


class ClientLimits(Model):
    """Size limits on what one client may send."""

    max_request_target_bytes: ByteSize = Field(8 * KiB, ge=64)
    max_header_count: Count = Field(100, ge=1, le=10_000)
    max_header_bytes: ByteSize = Field(32 * KiB, ge=256)
    max_body_bytes: ByteSize = 1 * MiB
    max_requests_per_connection: Count = Field(1000, ge=1)


class ClientTimeouts(Model):
    """Deadlines that stop slow or idle clients from holding connections."""

    head: Duration = Field(10.0, gt=0)
    idle: Duration = Field(60.0, gt=0)
    write: Duration = Field(30.0, gt=0)
    min_body_rate: ByteSize = 1024
    body_rate_grace: Duration = 5.0
    body_idle: Duration = Field(10.0, gt=0)
    drain: Duration = Field(30.0, ge=0)
    tunnel_idle: Duration = Field(3600.0, gt=0)


class ServerConfig(Model):
    listen: ListenAddress = ("127.0.0.1", 8080)
    workers: Annotated[int | Literal["auto"], BeforeValidator(_parse_workers)] = "auto"
    trusted_proxies: tuple[IPNetwork, ...] = ()
    request_id_header: str = "X-Request-Id"
    # Header names with "_" or "." get 400 (true), or are forwarded unless they
    # spell a gateway-owned or hop-by-hop field (false), as nginx and Envoy allow.
    reject_header_name_variants: bool = True
    # Host names the gateway serves (exact or "*.example.test"); others get 421. Empty: any.
    hosts: tuple[str, ...] = ()
    limits: ClientLimits = ClientLimits()
    timeouts: ClientTimeouts = ClientTimeouts()
    # The HTTPS listener; None: plain HTTP on `listen` only.
    tls: TlsListenerConfig | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of IP addresses or CIDR ranges")
        networks = []
        for entry in value:
            try:
                networks.append(ipaddress.ip_network(str(entry), strict=False))
            except ValueError as exc:
                raise ValueError(f"invalid IP address or CIDR range {entry!r}") from exc
        return tuple(networks)

    @field_validator("hosts", mode="before")
    @classmethod
    def _normalize_server_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of host names such as [api.example.test]")
        return tuple(normalize_host_pattern(str(host)) for host in value)

    @field_validator("request_id_header")
    @classmethod
    def _check_header_name(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("expected an HTTP header name such as X-Request-Id")
        return value

    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        return self.workers


class AccessLogConfig(Model):
    enabled: bool = True
    destination: str = "stdout"


class AuditLogConfig(Model):
    """The audit log: one record per decision on audited routes and per auth failure.

    `on_failure` decides what happens to a request whose record cannot be
    written: `reject` returns 503, `serve` serves it and logs the error.
    """

    destination: str = "stdout"
    on_failure: Literal["reject", "serve"] = "serve"


class LogConfig(Model):
    """Log settings; each destination is "stdout", "stderr" or a file path."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        BeforeValidator(lambda value: value.lower() if isinstance(value, str) else value),
    ] = "info"
    destination: str = "stderr"
    access: AccessLogConfig = AccessLogConfig()
    audit: AuditLogConfig = AuditLogConfig()
    # The WAF's security log: "stdout" or a file path.
    security: str = "stdout"


class UpstreamTimeouts(Model):
    connect: Duration = Field(5.0, gt=0)
    read: Duration = Field(60.0, gt=0)
    write: Duration = Field(60.0, gt=0)


class PoolConfig(Model):
    """Keep-alive connections kept open to each target."""

    max_idle: Count = Field(64, ge=0, le=10_000)
    idle_timeout: Duration = Field(60.0, gt=0)


class PassiveHealth(Model):
    """Skip a target for `cooldown` after `failures` consecutive connection failures."""

    enabled: bool = True
    failures: Count = Field(1, ge=1)
    cooldown: Duration = Field(10.0, gt=0)


class ActiveHealth(Model):
    """Probe each target with GET `path` every `interval`."""

    path: str = "/health"
    interval: Duration = Field(5.0, gt=0)
    timeout: Duration = Field(2.0, gt=0)
    healthy_threshold: Count = Field(2, ge=1)
    unhealthy_threshold: Count = Field(2, ge=1)

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or any(ch <= " " or ch == "\x7f" for ch in value):
            raise ValueError("expected an absolute path such as /health")
        return value


class Target(Model):
    host: str
    port: Count = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        labels = value.lower().rstrip(".").split(".")
        if not all(_HOST_LABEL.match(label) for label in labels):
            raise ValueError(f"invalid host {value!r}: expected a host name or IP address")
        return value

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _parse_target(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(
            f"unsupported target {url!r}: expected http://HOST[:PORT] or https://HOST[:PORT]"
        )
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"invalid target {url!r}: expected {scheme}://HOST:PORT with no path")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"invalid target {url!r}: expected {scheme}://HOST:PORT with no fragment")
    try:
        port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in target {url!r}") from exc
    if port == 0:
        raise ValueError(f"invalid port 0 in target {url!r}: expected 1 to 65535")
    if not parts.hostname:
        raise ValueError(f"missing host in target {url!r}")
    return Target(host=parts.hostname, port=port, scheme=scheme)


class Upstream(Model):
    targets: tuple[Target, ...] = Field(min_length=1)
    balance: Literal["round_robin", "least_connections"] = "round_robin"
    preserve_host: bool = False
    retries: Count = Field(1, ge=0, le=5)
    pool: PoolConfig = PoolConfig()
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    passive_health: PassiveHealth = PassiveHealth()
    health_check: ActiveHealth | None = None
    # TLS settings for https:// targets. None verifies with the system roots and the target host.
    tls: ClientTlsConfig | None = None

    @field_validator("targets", mode="before")
    @classmethod
    def _parse_targets(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of target URLs such as http://127.0.0.1:9000")
        return tuple(_parse_target(v) if isinstance(v, str) else v for v in value)

    @field_validator("tls")
    @classmethod
    def _check_tls_files(cls, value: ClientTlsConfig | None) -> ClientTlsConfig | None:
        # The context is built once here so that a CA bundle without a usable
        # certificate, or a key that does not match its certificate, fails the
        # load with its key path instead of a worker's start.
        if value is not None:
            # Imported here: client_context imports ringwall.config, which imports this module.
            from ringwall.tls.client_context import build_client_tls

            build_client_tls(value)
        return value

    @model_validator(mode="after")
    def _check_schemes(self) -> Upstream:
        schemes = {target.scheme for target in self.targets}
        if len(schemes) > 1:
            raise ValueError(
                "targets mix http:// and https://: write every target of an upstream "
                "with one scheme, or split them into two upstreams"
            )
        if self.tls is not None and schemes == {"http"}:
            raise ValueError(
                "tls applies to https:// targets only: write the targets as "
                "https://HOST[:PORT], or remove tls"
            )
        return self

    @property
    def https(self) -> bool:
        """True when the targets are https:// (an upstream never mixes schemes)."""
        return self.targets[0].scheme == "https"


# JWS algorithms an issuer may list. HMAC and asymmetric ones never mix in one issuer.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
AUTH_METHODS = ("jwt", "api_key", "mtls")


class IssuerConfig(Model):
    """A trusted token issuer: the source of its keys and the claims its tokens must carry."""

    issuer: str = Field(min_length=1)
    jwks: str | None = None
    hmac_secret: SecretValue | None = None
    algorithms: tuple[str, ...] = Field(min_length=1)
    audiences: tuple[str, ...] = Field(min_length=1)
    required_claims: tuple[str, ...] = ()
    max_lifetime: Duration = Field(86_400.0, gt=0)
    leeway: Duration = Field(30.0, ge=0, le=300)
    cache_ttl: Duration = Field(600.0, gt=0)
    refetch_cooldown: Duration = Field(30.0, ge=0)
    max_stale: Duration = Field(86_400.0, ge=0)
    fetch_timeout: Duration = Field(3.0, gt=0)
    ca_file: str | None = None
    # Keep the verified token in Authorization towards the upstream. Off by
    # default, as in Envoy's jwt_authn: the upstream gets the identity fields.
    forward_token: bool = False

    @model_validator(mode="after")
    def _check_keys(self) -> IssuerConfig:
        algorithms = set(self.algorithms)
        unknown = algorithms - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS
        if unknown:
            raise ValueError(
                f"unsupported algorithms {sorted(unknown)}: expected RS256, PS256, ES256, "
                "EdDSA, HS256 or another registered JWS algorithm"
            )
        if (self.jwks is None) == (self.hmac_secret is None):
            raise ValueError("set exactly one of jwks (a URL or file:PATH) and hmac_secret")
        if self.jwks is not None and algorithms & HMAC_ALGORITHMS:
            raise ValueError("HMAC algorithms need hmac_secret, never keys from a JWKS")
        if self.hmac_secret is not None and algorithms - HMAC_ALGORITHMS:
            raise ValueError("an hmac_secret issuer may list only HS256, HS384 or HS512")
        return self


class ApiKeysConfig(Model):
    """The API key file, written by `ringwall keys`, and the header that carries keys."""

    file: str
    header: str = "X-API-Key"
    prefix: str = "rw_"

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("expected an HTTP header name such as X-API-Key")
        return value


class ClaimsConfig(Model):
    """The token claims that carry roles and scopes; a dotted path reads nested claims.

    A claim may be a list of strings or one space-separated string, so both
    `scope: "a b"` and `scp: [a, b]` are read.
    """

    roles: tuple[str, ...] = ("roles",)
    scopes: tuple[str, ...] = ("scope", "scp")


class RevocationsConfig(Model):
    """The store of revoked tokens (by issuer and jti): a local file or Redis.

    `ringwall revoke` writes either. A file reaches the workers of one
    machine; Redis reaches every instance that uses the same Redis.
    """

    file: str | None = None
    redis: str | None = None
    redis_key: str = "ringwall:revoked-tokens"

    @model_validator(mode="after")
    def _check_store(self) -> RevocationsConfig:
        if (self.file is None) == (self.redis is None):
            raise ValueError("set exactly one of file and redis")
        if self.redis is not None and not self.redis.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("expected a Redis URL such as redis://127.0.0.1:6379/0")
        return self


class UpstreamTokenConfig(Model):
    """A JWT signed by the gateway for each authenticated request, for backends to verify."""

    key_file: str
    issuer: str = "ringwall"
    audience: str = "upstream"
    ttl: Duration = Field(60.0, gt=0, le=3600)
    header: str = "X-Ringwall-Token"
    jwks_path: str = "/.well-known/ringwall/jwks.json"

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        if not _TOKEN.match(value) or not value.lower().startswith("x-ringwall-"):
            raise ValueError("expected a header name starting with X-Ringwall-")
        return value


class CertificateMatcher(Model):
    """One client certificate name: exactly one of `dns`, `email`, `uri`, `ip` and `subject`.

    `dns` is a name or `*.` and a name for exactly one label under it, compared
    without regard to case. The others are compared exactly: `email` and
    `uri` with a SAN of that type, `ip` with an IP address SAN, `subject` with
    the subject DN as an RFC 4514 string (`CN=app,O=Example`).
    """

    dns: str | None = None
    email: str | None = None
    uri: str | None = None
    ip: str | None = None
    subject: str | None = None

    @model_validator(mode="after")
    def _check_one_name(self) -> CertificateMatcher:
        set_kinds = [kind for kind in NAME_KINDS if getattr(self, kind) is not None]
        if len(set_kinds) != 1:
            raise ValueError(
                f"set exactly one of {', '.join(NAME_KINDS)}, as in {{dns: client.example.test}}"
            )
        self.rule()  # raises ValueError for an invalid value
        return self

    def rule(self) -> NameRule:
        for kind in NAME_KINDS:
            value = getattr(self, kind)
            if value is not None:
                return NameRule.parse(kind, value)
        raise ValueError(f"set one of {', '.join(NAME_KINDS)}")


CertificateMatchers = Annotated[tuple[CertificateMatcher, ...], Field(min_length=1)]


class MtlsConfig(Model):
    """Client certificates accepted on routes with `auth: mtls`, and the identity they give.

    The TLS handshake verifies the certificate against the listener's
    `client_auth.ca`. `allow` then limits which of those certificates are
    accepted; an empty list accepts all of them. `roles` and `scopes` map
    each role or scope to the names that grant it.
    """

    allow: tuple[CertificateMatcher, ...] = ()
    subject: SubjectSource = "san"
    roles: dict[str, CertificateMatchers] = Field(default_factory=dict)
    scopes: dict[str, CertificateMatchers] = Field(default_factory=dict)

    @field_validator("roles", "scopes")
    @classmethod
    def _check_grant_names(
        cls, value: dict[str, tuple[CertificateMatcher, ...]]
    ) -> dict[str, tuple[CertificateMatcher, ...]]:
        for name in value:
            if not name or any(ch <= " " or ch == "\x7f" for ch in name):
                raise ValueError(
                    f"invalid role or scope name {name!r}: expected a name without spaces "
                    "or control characters"
                )
        return value

    def policy(self) -> IdentityPolicy:
        """Return the policy that `ringwall.tls.client_identity.identify` applies."""
        return IdentityPolicy(
            allow=tuple(matcher.rule() for matcher in self.allow),
            subject=self.subject,
            roles={name: tuple(m.rule() for m in rules) for name, rules in self.roles.items()},
            scopes={name: tuple(m.rule() for m in rules) for name, rules in self.scopes.items()},
        )


class AuthConfig(Model):
    issuers: dict[str, IssuerConfig] = Field(default_factory=dict)
    api_keys: ApiKeysConfig | None = None
    # Client certificates for routes with `auth: mtls`.
    mtls: MtlsConfig | None = None
    revocations: RevocationsConfig | None = None
    upstream_token: UpstreamTokenConfig | None = None
    claims: ClaimsConfig = ClaimsConfig()
    token_cache_size: Count = Field(10_000, ge=0, le=1_000_000)


class RouteAuth(Model):
    """The authentication of a route: none (public), or the accepted methods."""

    methods: tuple[Literal["jwt", "api_key", "mtls"], ...] = ()
    optional: bool = False
    issuers: tuple[str, ...] = ()

    @property
    def public(self) -> bool:
        return not self.methods


def _parse_route_auth(value: object) -> object:
    """Accept `none`, one method, a list of methods, or the full mapping."""
    if value == "none":
        return {"methods": ()}
    if isinstance(value, str):
        return {"methods": (value,)}
    if isinstance(value, list | tuple):
        return {"methods": tuple(value)}
    return value


class RoleRule(Model):
    any_of: tuple[str, ...] = ()
    all_of: tuple[str, ...] = ()


def _parse_role_rule(value: object) -> object:
    return {"any_of": value} if isinstance(value, list | tuple | str) else value


class OwnerRule(Model):
    """The path parameter `param` must equal the claim `claim` or be one of its values."""

    param: str
    claim: str


class AuthorizeRule(Model):
    """Requirements for the requests of a route whose method is in `methods` (all if empty)."""

    methods: tuple[str, ...] = ()
    roles: Annotated[RoleRule, BeforeValidator(_parse_role_rule)] = RoleRule()
    scopes: Annotated[RoleRule, BeforeValidator(_parse_role_rule)] = RoleRule()
    owner: OwnerRule | None = None

    @field_validator("methods", mode="before")
    @classmethod
    def _upper_methods(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(str(method).upper() for method in value)
        return value


def normalize_host_pattern(pattern: str) -> str:
    """Lowercase a route host pattern and check it is a host name or `*.` wildcard."""
    host = pattern.lower().rstrip(".")
    labels = host[2:].split(".") if host.startswith("*.") else host.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"invalid host {pattern!r}: expected a name such as api.example.com")
    return host


class DecompressConfig(Model):
    """Content codings a route decodes, so that its layers and upstream see the decoded body.

    A body over `max_bytes` once decoded, or more than `max_ratio` times its
    received size, gets 413.
    """

    encodings: tuple[str, ...] = SUPPORTED_CODINGS
    max_ratio: Count = Field(100, ge=1)
    # None: the route's body limit.
    max_bytes: ByteSize | None = Field(None, ge=1)

    @field_validator("encodings", mode="before")
    @classmethod
    def _check_encodings(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not value:
            raise ValueError("expected a list of content codings such as [gzip, deflate]")
        encodings: list[str] = []
        for item in value:
            coding = str(item).strip().lower()
            if coding not in SUPPORTED_CODINGS:
                raise ValueError(
                    f"unsupported content coding {str(item)[:32]!r}: expected gzip or deflate"
                )
            if coding not in encodings:
                encodings.append(coding)
        return tuple(encodings)


class Route(Model):
    name: str = ""
    hosts: tuple[str, ...] = ()
    path: str
    match: Literal["prefix", "exact", "template"] = "prefix"
    # Match the path without regard to case; the upstream then gets it case-folded.
    case_insensitive: bool = False
    methods: tuple[str, ...] = ()
    strip_prefix: bool = False
    upgrades: tuple[str, ...] = ()
    auth: Annotated[RouteAuth, BeforeValidator(_parse_route_auth)]
    authorize: tuple[AuthorizeRule, ...] = ()
    # None: audited when the route is not public.
    audit: bool | None = None
    upstream: str
    max_body_bytes: ByteSize | None = None
    limits: tuple[LimitConfig, ...] = ()
    cors: CorsConfig | None = None
    validate_: ValidateConfig | None = Field(None, alias="validate")
    # None: the gateway-wide `waf`.
    waf: WafConfig | None = None
    # None: a body with a Content-Encoding is forwarded as received, and gets
    # 415 on a route with a WAF or with `validate`.
    decompress: DecompressConfig | None = None
    # None: the gateway-wide `security_headers`.
    security_headers: SecurityHeadersConfig | None = None

    @field_validator("hosts", mode="before")
    @classmethod
    def _normalize_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of host names")
        return tuple(normalize_host_pattern(str(host)) for host in value)

    @field_validator("methods", mode="before")
    @classmethod
    def _normalize_methods(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of methods such as [GET, POST]")
        methods = tuple(str(method).upper() for method in value)
        for method in methods:
            if not _TOKEN.match(method):
                raise ValueError(f"invalid method {method!r}")
        return methods

    @field_validator("upgrades", mode="before")
    @classmethod
    def _normalize_upgrades(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list of protocols such as [websocket]")
        protocols = tuple(str(protocol).lower() for protocol in value)
        for protocol in protocols:
            if not _TOKEN.match(protocol):
                raise ValueError(f"invalid protocol name {protocol!r}")
        return protocols

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected a path that starts with /")
        if not value.isascii():
            raise ValueError("expected a path of ASCII characters")
        if any(ch <= " " or ch in "?#\\%\x7f" for ch in value):
            raise ValueError("expected a plain path without spaces, ?, #, \\ or %-escapes")
        segments = value.split("/")[1:]
        if any(segment in (".", "..") for segment in segments) or "//" in value:
            raise ValueError("expected a normalized path without //, . or .. segments")
        return value

    @model_validator(mode="after")
    def _check_match(self) -> Route:
        has_params = "{" in self.path or "}" in self.path
        if self.match == "template":
            for segment in self.path.split("/")[1:]:
                if ("{" in segment or "}" in segment) and not _PARAM.match(segment):
                    raise ValueError(
                        f"invalid template segment {segment!r}: a parameter fills a whole "
                        "segment, as in /accounts/{id}"
                    )
        elif has_params:
            raise ValueError("a path with {param} needs match: template")
        if self.strip_prefix and self.match != "prefix":
            raise ValueError("strip_prefix needs match: prefix")
        if self.authorize and self.auth.public:
            raise ValueError(
                "authorize needs an authenticated route: set auth to jwt, api_key or mtls"
            )
        names = [limit.name for limit in self.limits]
        if len(set(names)) != len(names):
            raise ValueError("limits: each limit of a route needs its own name")
        for limit in self.limits:
            if limit.after_authentication and self.auth.public:
                raise ValueError(
                    f"limit {limit.name!r} counts per caller: the route needs auth jwt, "
                    "api_key or mtls"
                )
        params = {segment[1:-1] for segment in self.path.split("/") if segment.startswith("{")}
        if self.validate_ is not None:
            for name in self.validate_.path_params:
                if name not in params:
                    raise ValueError(
                        f"validate.path_params: {name!r} is not a parameter of path {self.path!r}"
                    )
        for rule in self.authorize:
            if rule.owner is not None and rule.owner.param not in params:
                raise ValueError(
                    f"owner param {rule.owner.param!r} is not a parameter of path {self.path!r}"
                )
        return self


class AdminConfig(Model):
    """The admin API: a separate listener, each request with `Authorization: Bearer TOKEN`."""

    listen: ListenAddress = ("127.0.0.1", 9901)
    token: SecretValue

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: Secret) -> Secret:
        if len(value.reveal()) < 32:
            raise ValueError(
                "expected a token of at least 32 characters, such as the output of "
                "`openssl rand -hex 32`"
            )
        return value


class Config(Model):
    """A whole gateway configuration, as loaded from one YAML file."""

    server: ServerConfig = ServerConfig()
    logging: LogConfig = LogConfig()
    auth: AuthConfig = AuthConfig()
    upstreams: dict[str, Upstream] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    limits: LimitsConfig = LimitsConfig()
    admin: AdminConfig | None = None
    # Response fields added on every route that sets none of its own.
    security_headers: SecurityHeadersConfig = SecurityHeadersConfig()
    # The WAF policy of routes that set none of their own; None: no WAF.
    waf: WafConfig | None = None

    @model_validator(mode="after")
    def _name_routes(self) -> Config:
        # Unnamed routes are named by position. The loader reports duplicate
        # names with their key path; this check covers configurations built in code.
        routes = tuple(
            route if route.name else route.model_copy(update={"name": f"routes[{index}]"})
            for index, route in enumerate(self.routes)
        )
        names = [route.name for route in routes]
        for name in names:
            if names.count(name) > 1:
                raise PydanticCustomError(
                    DUPLICATE_ROUTE_NAME, "duplicate route name '{name}'", {"name": name}
                )
        object.__setattr__(self, "routes", routes)
        return self
