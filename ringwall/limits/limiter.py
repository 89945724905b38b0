"""Apply a route's limits to a request: build each key, ask the store, set the fields.

`CompiledLimit` is a configured limit prepared once at load: its rates,
tiers and key parts. `Limiter.check` runs a tuple of them against one
request. With the embedded store every check is synchronous. With Redis,
`check` returns an awaitable, and a Redis outage is handled per limit by
its `on_store_failure`: `fail_open` allows, `fail_closed` refuses with 503,
`local_fallback` enforces limit / `instances` in the embedded store.

An allowed request gets `RateLimit-Policy` and `RateLimit` response fields
(draft-ietf-httpapi-ratelimit-headers): one item per limit, for example
`"per-ip";q=100;w=60` and `"per-ip";r=42;t=17`. A refused one gets 429 with
`Retry-After` and the same fields.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ringwall.config.limits import LimitConfig, RateSpec, StoreFailure
from ringwall.errors import RingwallError, ServiceUnavailable, TooManyRequests
from ringwall.limits.gcra import Decision, Rate
from ringwall.limits.window import Quota, WindowDecision

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.identity import Identity
    from ringwall.state._native import RateTable

log = logging.getLogger("ringwall.limits")

Spec = Rate | Quota
Outcome = Decision | WindowDecision
# The response fields the limiter writes; an upstream's fields of these names are dropped.
RATELIMIT_FIELDS = frozenset({b"ratelimit", b"ratelimit-policy"})


class StoreUnavailable(Exception):
    """The shared store (Redis) could not be reached in time."""


class LocalStore(Protocol):
    """The embedded store's checks, as `ringwall.state.shared.SharedStore` provides them."""

    def check_rate(self, key: bytes, rate: Rate, now: float, cost: int = 1) -> Decision: ...

    def check_window(
        self, key: bytes, quota: Quota, now: float, cost: int = 1
    ) -> WindowDecision: ...

    def count_store_failure(self) -> None: ...


class RemoteStore(Protocol):
    """Checks made in a store shared by instances, on the store's own clock."""

    async def check_rate(self, key: bytes, rate: Rate, cost: int = 1) -> Decision: ...

    async def check_window(self, key: bytes, quota: Quota, cost: int = 1) -> WindowDecision: ...


def _spec(config: RateSpec, kind: str) -> Spec:
    if kind == "rate":
        return Rate(config.limit, config.period, config.burst_or_limit)
    return Quota(config.limit, config.period)


def _scaled(spec: Spec, instances: int) -> Spec:
    """Return `spec` with its limit divided among `instances`, at least 1."""
    if instances <= 1:
        return spec
    if isinstance(spec, Rate):
        return Rate(max(1, spec.limit // instances), spec.period, max(1, spec.burst // instances))
    return Quota(max(1, spec.limit // instances), spec.window)


# A spec with its RateLimit-Policy item, made once per limit and tier.
Plan = tuple[Spec, bytes]


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    """A configured limit, prepared for the per-request check."""

    name: str
    kind: str  # "rate" or "quota"
    default: Plan
    tiers: tuple[tuple[frozenset[str], Plan], ...]
    parts: tuple[str, ...]
    on_failure: StoreFailure
    # The name as a structured-field string, such as b'"per-ip"'.
    item: bytes
    # The key's first bytes: the limit's scope and name, so limits never share a key.
    prefix: bytes
    # The rate of a limit by client IP alone without tiers, for the limiter's fast path.
    ip_rate: Rate | None = None
    # The default plan's RateLimit-Policy field, made once.
    policy_field: tuple[bytes, bytes] = (b"", b"")

    @classmethod
    def compile(
        cls, config: LimitConfig, scope: str, default_failure: StoreFailure
    ) -> CompiledLimit:
        kind = "rate" if config.rate is not None else "quota"
        spec_config = config.rate if config.rate is not None else config.quota
        assert spec_config is not None
        default = _spec(spec_config, kind)
        tiers = []
        for tier in config.tiers:
            tier_config = tier.rate if tier.rate is not None else tier.quota
            assert tier_config is not None
            spec = _spec(tier_config, kind)
            tiers.append((frozenset(tier.roles), (spec, _policy_item(config.name, spec))))
        return cls(
            name=config.name,
            kind=kind,
            default=(default, _policy_item(config.name, default)),
            tiers=tuple(tiers),
            parts=config.key,
            on_failure=config.on_store_failure or default_failure,
            item=f'"{config.name}"'.encode(),
            prefix=f"{scope}\x00{config.name}\x00".encode(),
            ip_rate=default if isinstance(default, Rate) and config.key == _IP_ONLY else None,
            policy_field=(b"RateLimit-Policy", _policy_item(config.name, default)),
        )

    def plan_for(self, identity: Identity | None) -> Plan:
        """Return the first tier whose roles the caller has (roles or scopes), else the default."""
        if identity is not None and self.tiers:
            for roles, plan in self.tiers:
                if not roles.isdisjoint(identity.roles) or not roles.isdisjoint(identity.scopes):
                    return plan
        return self.default


def _policy_item(name: str, spec: Spec) -> bytes:
    if isinstance(spec, Rate):
        return f'"{name}";q={spec.burst};w={_seconds(spec.period)}'.encode()
    return f'"{name}";q={spec.limit};w={_seconds(spec.window)}'.encode()


def _seconds(value: float) -> int:
    return max(1, math.ceil(value - 1e-9))


class KeyBuilder:
    """Build a limit's key from a request: its parts, joined by NUL bytes."""

    def __init__(self, ipv6_prefix: int) -> None:
        self.ipv6_prefix = ipv6_prefix

    def client(self, address: str) -> str:
        """Return the client IP as counted: IPv6 addresses grouped by the configured prefix."""
        if ":" not in address:
            return address
        address = address.split("%", 1)[0]  # no zone id in a key
        if self.ipv6_prefix >= 128:
            return address
        try:
            network = ipaddress.IPv6Network(f"{address}/{self.ipv6_prefix}", strict=False)
        except ValueError:
            return address
        return str(network)

    def key(self, limit: CompiledLimit, exchange: Exchange) -> bytes | None:
        """Return the limit's key for `exchange`, or None when the caller lacks a part of it.

        A caller without a subject or API key id (anonymous, or a token on a
        limit keyed by API key) is not counted by that limit, so callers of
        another kind never share one bucket.
        """
        parts = limit.parts
        if parts == _IP_ONLY:
            return limit.prefix + self.client(exchange.client_ip).encode("ascii")
        values = []
        for part in parts:
            if part == "ip":
                values.append(self.client(exchange.client_ip))
            elif part == "route":
                route = exchange.route
                values.append(route.name if route is not None else "")
            elif part == "subject":
                identity = exchange.identity
                if identity is None:
                    return None
                values.append(identity.subject)
            elif part == "api_key":
                identity = exchange.identity
                if identity is None or identity.method != "api_key" or not identity.key_id:
                    return None
                values.append(identity.key_id)
            else:
                wanted = part[len("header:") :].lower().encode("ascii")
                found = exchange.header_values(wanted)
                values.append(found[0].decode("latin-1") if found else "")
        return limit.prefix + "\x00".join(values).encode("utf-8", "surrogateescape")


_IP_ONLY = ("ip",)
# One checked limit: the limit, its policy item, the key and the store's decision.
_Result = tuple[CompiledLimit, bytes, bytes, Decision | WindowDecision]


class Limiter:
    """Check limits against the embedded store, or against Redis with a fallback."""

    def __init__(
        self,
        local: LocalStore,
        keys: KeyBuilder,
        *,
        remote: RemoteStore | None = None,
        instances: int = 1,
        retry_after_on_failure: int = 5,
        unavailable: tuple[type[Exception], ...] = (StoreUnavailable,),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = local
        self.remote = remote
        self.keys = keys
        self.instances = instances
        self.retry_after_on_failure = retry_after_on_failure
        self.clock = clock
        # The exceptions of `remote` that mean an outage, not a bug.
        self.unavailable = unavailable
        self.failures = 0
        self._outage = False
        # The C rate check of the embedded store, when it has one.
        self._native_rates: RateTable | None = getattr(local, "native_rates", None)

    def check(
        self, exchange: Exchange, limits: Sequence[CompiledLimit], layer: str
    ) -> Awaitable[None] | None:
        """Count the request against each limit; raise `TooManyRequests` when one is exhausted."""
        if self.remote is not None:
            return self._check_remote(exchange, limits, layer)
        now = self.clock()
        local = self.local
        results: list[_Result] = []
        for limit in limits:
            spec, policy = limit.plan_for(exchange.identity)
            key = self.keys.key(limit, exchange)
            if key is None:
                continue
            outcome: Outcome
            if isinstance(spec, Rate):
                outcome = local.check_rate(key, spec, now)
            else:
                outcome = local.check_window(key, spec, now)
            results.append((limit, policy, key, outcome))
            if not outcome.allowed:
                break
        _finish(exchange, results, layer)
        return None

    def checker(
        self, limits: tuple[CompiledLimit, ...], layer: str
    ) -> Callable[[Exchange], Awaitable[None] | None]:
        """Return a function that runs `check(exchange, limits, layer)`.

        For the common case, one rate per client IP in the embedded store,
        the function is specialized: with the C check it costs about half of
        `check` per request.
        """
        native = self._native_rates
        ip_rate = limits[0].ip_rate if len(limits) == 1 else None
        if self.remote is not None or ip_rate is None:
            return lambda exchange: self.check(exchange, limits, layer)
        limit = limits[0]
        native_check = native.check if native is not None else None
        clock = self.clock
        client = self.keys.client
        prefix = limit.prefix
        interval = ip_rate.interval
        capacity = ip_rate.capacity
        item = limit.item
        policy_field = limit.policy_field
        # Client address to key, so that a connection's requests reuse one key
        # and its cached hash. Cleared when full, so spoofed addresses cannot
        # grow it.
        keys: dict[str, bytes] = {}

        def check_ip_rate(exchange: Exchange) -> None:
            address = exchange.client_ip
            key = keys.get(address)
            if key is None:
                key = prefix + client(address).encode("ascii")
                if len(keys) >= _KEY_CACHE_SIZE:
                    keys.clear()
                keys[address] = key
            now = clock()
            fields = (
                native_check(key, now, interval, capacity, item, policy_field)
                if native_check is not None
                else None
            )
            if fields.__class__ is not list:
                state = self._decide_ip_rate(exchange, limit, key, now, fields, layer)
                fields = [policy_field, (b"RateLimit", state)]
            headers = exchange.response_headers
            if headers:
                fields = [*headers, *fields]
            exchange.response_headers = fields

        return check_ip_rate

    def _decide_ip_rate(
        self,
        exchange: Exchange,
        limit: CompiledLimit,
        key: bytes,
        now: float,
        checked: object,
        layer: str,
    ) -> bytes:
        """Finish a per-IP rate check that the C check did not allow; return the RateLimit item.

        `checked` is the C check's refusal tuple, or None when there is no C
        check or its stripe lock was taken, and the Python check then waits.
        Raises `TooManyRequests` for a refusal.
        """
        assert limit.ip_rate is not None
        if checked is None:
            outcome: Outcome = self.local.check_rate(key, limit.ip_rate, now)
        else:
            outcome = _new_tuple(Decision, (False, *checked))  # type: ignore[misc]
        if not outcome.allowed:
            _finish(exchange, [(limit, limit.default[1], key, outcome)], layer)
        reset = _reset(outcome.reset, key)
        return b"%b;r=%d;t=%d" % (limit.item, outcome.remaining, reset)

    async def _check_remote(
        self, exchange: Exchange, limits: Sequence[CompiledLimit], layer: str
    ) -> None:
        remote = self.remote
        assert remote is not None
        results: list[_Result] = []
        for limit in limits:
            spec, policy = limit.plan_for(exchange.identity)
            key = self.keys.key(limit, exchange)
            if key is None:
                continue
            try:
                if isinstance(spec, Rate):
                    outcome: Outcome = await remote.check_rate(key, spec)
                else:
                    outcome = await remote.check_window(key, spec)
                self._recovered()
            except self.unavailable as exc:
                fallback = self._on_failure(limit, spec, key, exc, layer)
                if fallback is None:
                    continue
                outcome = fallback
            results.append((limit, policy, key, outcome))
            if not outcome.allowed:
                break
        _finish(exchange, results, layer)

    def _on_failure(
        self, limit: CompiledLimit, spec: Spec, key: bytes, exc: Exception, layer: str
    ) -> Outcome | None:
        """Apply the limit's store failure mode; return None to skip the limit."""
        self.failures += 1
        try:
            self.local.count_store_failure()
        except RingwallError as count_exc:  # the embedded store is busy
            log.warning("store failure not counted", extra={"error": str(count_exc)})
        if not self._outage:
            self._outage = True
            log.error(
                "the limit store is unreachable; limits follow their on_store_failure until it "
                "returns",
                extra={"layer": layer, "error": str(exc)},
            )
        if limit.on_failure == "fail_open":
            return None
        if limit.on_failure == "fail_closed":
            raise ServiceUnavailable(
                layer,
                f"limit {limit.name}: the limit store is unreachable and the limit fails closed",
                headers=(("Retry-After", str(self.retry_after_on_failure)),),
                detail="the request cannot be served right now",
            )
        scaled = _scaled(spec, self.instances)
        now = self.clock()
        if isinstance(scaled, Rate):
            return self.local.check_rate(key, scaled, now)
        return self.local.check_window(key, scaled, now)

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("the limit store is reachable again", extra={"failures": self.failures})


def _finish(exchange: Exchange, results: list[_Result], layer: str) -> None:
    """Add the RateLimit fields, or raise 429 if the last result refused the request."""
    if not results:
        return
    if len(results) == 1:
        limit, policies, key, outcome = results[0]
        states = b"%b;r=%d;t=%d" % (limit.item, outcome.remaining, _state_reset(outcome, key))
    else:
        policies = b", ".join(policy for _, policy, _, _ in results)
        states = b", ".join(
            b"%b;r=%d;t=%d" % (limit.item, outcome.remaining, _state_reset(outcome, key))
            for limit, _, key, outcome in results
        )
        limit, _, _, outcome = results[-1]
    if not outcome.allowed:
        retry_after = max(1, math.ceil(outcome.retry_after))
        raise TooManyRequests(
            layer,
            f"limit {limit.name} exceeded",
            headers=(
                ("Retry-After", str(retry_after)),
                ("RateLimit-Policy", policies.decode("ascii")),
                ("RateLimit", states.decode("ascii")),
            ),
            detail=f"too many requests: retry after {retry_after} s",
        )
    fields = [(b"RateLimit-Policy", policies), (b"RateLimit", states)]
    if exchange.response_headers:
        exchange.response_headers = [*exchange.response_headers, *fields]
    else:
        exchange.response_headers = fields


def _state_reset(outcome: Outcome, key: bytes) -> int:
    """Return the `t` of a RateLimit item: never before the request would be allowed."""
    return _reset(max(outcome.reset, outcome.retry_after), key)


def _reset(seconds: float, key: bytes) -> int:
    # Up to 0.1 s of jitter, fixed per key, so that clients limited at the
    # same moment do not all see the same reset time. The key's hash is
    # cached on it by the store's lookup.
    return math.ceil(seconds + (hash(key) & 0xFF) * _JITTER_STEP)


_JITTER_STEP = 0.1 / 256
# Entries of a specialized check's address-to-key cache.
_KEY_CACHE_SIZE = 4096
# tuple.__new__(Decision, fields) builds the NamedTuple without its Python-level __new__.
_new_tuple = tuple.__new__
