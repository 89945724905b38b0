"""Keys and RateLimit fields of the limiter, without sockets."""

import asyncio
from typing import Any

from ringwall.config.limits import LimitConfig
from ringwall.errors import TooManyRequests
from ringwall.exchange import Exchange
from ringwall.gateway.identity import Identity
from ringwall.limits.gcra import Decision, Rate
from ringwall.limits.limiter import CompiledLimit, KeyBuilder, Limiter, StoreUnavailable
from ringwall.limits.window import Quota, WindowDecision
from ringwall.state.shared import SharedStore


def exchange(identity: Identity | None = None, client_ip: str = "203.0.113.9") -> Exchange:
    no_runtime: Any = None
    result = Exchange(no_runtime, client_ip, 0.0, 0.0)
    result.identity = identity
    return result


def identity(method: str, key_id: str | None) -> Identity:
    return Identity(
        subject="alice",
        method=method,
        issuer=None,
        key_id=key_id,
        roles=frozenset({"gold"}),
        scopes=frozenset(),
        claims={},
    )


def compiled(**config: Any) -> CompiledLimit:
    return CompiledLimit.compile(LimitConfig.model_validate(config), "route", "fail_open")


def test_ipv6_grouped_by_prefix() -> None:
    keys = KeyBuilder(64)
    assert keys.client("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert keys.client("fe80::1%eth0") == "fe80::/64"
    assert keys.client("203.0.113.9") == "203.0.113.9"


def test_api_key_limit_skips_token_callers() -> None:
    limit = compiled(name="daily", key=["api_key"], quota="10/day")
    keys = KeyBuilder(64)
    assert keys.key(limit, exchange(identity("jwt", "kid-1"))) is None
    assert keys.key(limit, exchange(None)) is None
    assert keys.key(limit, exchange(identity("api_key", "k1"))) == b"route\x00daily\x00k1"


def test_tier_picked_by_role() -> None:
    limit = compiled(
        name="daily",
        key=["subject"],
        quota="10/day",
        tiers=[{"roles": ["gold"], "quota": "100/day"}],
    )
    spec, policy = limit.plan_for(identity("jwt", None))
    assert spec == Quota(100, 86400.0)
    assert policy == b'"daily";q=100;w=86400'
    assert limit.plan_for(None)[0] == Quota(10, 86400.0)


def run_fast_path(
    use_c: bool, specialized: bool = False, client_ip: str = "203.0.113.9"
) -> list[object]:
    """Send three requests through a 2/min per-IP limit and return what each one got."""
    store = SharedStore.create(capacity=64, workers=1)
    if not use_c:
        store.native_rates = None
    limiter = Limiter(store, KeyBuilder(64), clock=lambda: 1_800_000_000.0)
    limit = compiled(name="per-ip", key=["ip"], rate="2/min")
    check = limiter.checker((limit,), "rate_limit")
    outcomes: list[object] = []
    try:
        for _ in range(3):
            request = exchange(client_ip=client_ip)
            try:
                if specialized:
                    assert check(request) is None
                else:
                    assert limiter.check(request, (limit,), "rate_limit") is None
                outcomes.append(request.response_headers)
            except TooManyRequests as refused:
                outcomes.append(refused.headers)
    finally:
        store.close()
    return outcomes


def test_fast_path_same_with_and_without_c() -> None:
    with_c = run_fast_path(use_c=True)
    assert with_c == run_fast_path(use_c=False)
    assert with_c == run_fast_path(use_c=True, specialized=True)
    assert with_c == run_fast_path(use_c=False, specialized=True)
    first, second, third = with_c
    policy = (b"RateLimit-Policy", b'"per-ip";q=2;w=60')
    # The reset time carries up to 0.1 s of jitter, so t is rounded up to 31 or 61 at most.
    assert first in (
        [policy, (b"RateLimit", b'"per-ip";r=1;t=30')],
        [policy, (b"RateLimit", b'"per-ip";r=1;t=31')],
    )
    assert second in (
        [policy, (b"RateLimit", b'"per-ip";r=0;t=60')],
        [policy, (b"RateLimit", b'"per-ip";r=0;t=61')],
    )
    assert isinstance(third, tuple)
    assert third[0] == ("Retry-After", "30")
    assert third[1] == ("RateLimit-Policy", '"per-ip";q=2;w=60')
    assert third[2][1] in ('"per-ip";r=0;t=60', '"per-ip";r=0;t=61')


class UnreachableStore:
    async def check_rate(self, key: bytes, rate: Rate, cost: int = 1) -> Decision:
        raise StoreUnavailable("connection refused")

    async def check_window(self, key: bytes, quota: Quota, cost: int = 1) -> WindowDecision:
        raise StoreUnavailable("connection refused")


def test_store_failures_counted_in_shared_memory() -> None:
    store = SharedStore.create(capacity=64, workers=1)
    limiter = Limiter(store, KeyBuilder(64), remote=UnreachableStore())
    limit = compiled(name="per-ip", key=["ip"], rate="5/min", on_store_failure="fail_open")
    try:
        for _ in range(3):
            pending = limiter.check(exchange(), (limit,), "rate_limit")
            assert pending is not None
            asyncio.run(pending)  # type: ignore[arg-type]
        assert store.counters()["store_failures"] == 3
    finally:
        store.close()


def test_specialized_check_groups_ipv6() -> None:
    # Two addresses of one /64 share a bucket: the third request is refused.
    store = SharedStore.create(capacity=64, workers=1)
    limiter = Limiter(store, KeyBuilder(64), clock=lambda: 1_800_000_000.0)
    limit = compiled(name="per-ip", key=["ip"], rate="2/min")
    check = limiter.checker((limit,), "rate_limit")
    try:
        assert check(exchange(client_ip="2001:db8::1")) is None
        assert check(exchange(client_ip="2001:db8::2")) is None
        try:
            check(exchange(client_ip="2001:db8::3"))
        except TooManyRequests as refused:
            assert refused.headers[0] == ("Retry-After", "30")
        else:
            raise AssertionError("the third request of the /64 was allowed")
        assert check(exchange(client_ip="2001:db8:0:1::1")) is None
    finally:
        store.close()
