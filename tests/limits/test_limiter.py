"""Keys and RateLimit fields of the limiter, without sockets."""

from typing import Any

from ringwall.config.limits import LimitConfig
from ringwall.exchange import Exchange
from ringwall.gateway.identity import Identity
from ringwall.limits.limiter import CompiledLimit, KeyBuilder
from ringwall.limits.window import Quota


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
