"""Authorization rules: roles, scopes and ownership, per method."""

from typing import Any

import pytest

from ringwall.config.model import Route
from ringwall.errors import Forbidden, Unauthorized
from ringwall.exchange import Exchange
from ringwall.gateway.authorization import AuthorizationLayer
from ringwall.gateway.identity import Identity
from ringwall.gateway.routing import CompiledRoute


def make_exchange(
    authorize: list[dict[str, Any]],
    identity: Identity | None,
    method: str = "GET",
    params: dict[str, str] | None = None,
) -> Exchange:
    route = Route(
        path="/accounts/{account_id}",
        match="template",
        upstream="api",
        auth="jwt",
        authorize=authorize,
    )
    no_runtime: Any = None
    exchange = Exchange(no_runtime, "127.0.0.1", 0.0, 0.0)
    exchange.route = CompiledRoute(route, 0)
    exchange.method = method
    exchange.identity = identity
    exchange.params = params or {"account_id": "acc-1001"}
    return exchange


def identity(
    roles: tuple[str, ...] = (), scopes: tuple[str, ...] = (), **claims: object
) -> Identity:
    return Identity(
        subject="user-1",
        method="jwt",
        issuer="i",
        key_id=None,
        roles=frozenset(roles),
        scopes=frozenset(scopes),
        claims={"sub": "user-1", **claims},
    )


def check(exchange: Exchange) -> None:
    AuthorizationLayer().check_head(exchange)


def test_role_any_of_allows() -> None:
    check(make_exchange([{"roles": ["admin", "customer"]}], identity(roles=("customer",))))


def test_role_any_of_denies() -> None:
    with pytest.raises(Forbidden) as info:
        check(make_exchange([{"roles": ["admin"]}], identity(roles=("customer",))))
    assert info.value.layer == "authorization"
    assert "admin" in info.value.reason
    assert "admin" not in info.value.detail


def test_scope_all_of() -> None:
    rule = [{"scopes": {"all_of": ["read", "write"]}}]
    check(make_exchange(rule, identity(scopes=("read", "write", "x"))))
    with pytest.raises(Forbidden):
        check(make_exchange(rule, identity(scopes=("read",))))


def test_rule_applies_to_listed_methods() -> None:
    rule = [{"methods": ["POST"], "roles": ["customer"]}]
    check(make_exchange(rule, identity(), method="GET"))
    with pytest.raises(Forbidden):
        check(make_exchange(rule, identity(), method="POST"))


@pytest.mark.parametrize(
    ("claim", "allowed"),
    [
        (["acc-1001", "acc-3"], True),
        (["acc-2002"], False),
        ("acc-1001", True),
        ("acc-10011", False),
        (None, False),
        ({"acc-1001": 1}, False),
    ],
)
def test_owner_rule(claim: object, allowed: bool) -> None:
    rule = [{"owner": {"param": "account_id", "claim": "accounts"}}]
    exchange = make_exchange(rule, identity(accounts=claim))
    if allowed:
        check(exchange)
    else:
        with pytest.raises(Forbidden):
            check(exchange)


def test_anonymous_gets_401() -> None:
    with pytest.raises(Unauthorized):
        check(make_exchange([{"roles": ["customer"]}], None))


def test_remembered_decision_is_per_method_and_route() -> None:
    # One identity, as the token cache hands out, across methods and routes.
    caller = identity(roles=("viewer",), accounts=["acc-1001"])
    rules = [
        {"methods": ["POST"], "roles": ["admin"]},
        {"owner": {"param": "account_id", "claim": "accounts"}},
    ]
    get = make_exchange(rules, caller, method="GET")
    post = make_exchange(rules, caller, method="POST")
    for _ in range(2):
        check(get)
        with pytest.raises(Forbidden):
            check(post)
    other_account = make_exchange(rules, caller, params={"account_id": "acc-9"})
    with pytest.raises(Forbidden):
        check(other_account)
    admin_rule = make_exchange([{"roles": ["viewer"]}], caller, method="POST")
    check(admin_rule)
