"""Authorization: what a verified identity may do on a route.

Each `authorize` rule of a route applies to the methods it lists, or to all
methods when it lists none. A request must satisfy every rule that applies:
the roles and scopes it names (any-of or all-of), and ownership, where a
path parameter must equal a claim or be one of its values. A failure is 403 for
an identity and 401 for an anonymous caller of a route with optional
authentication. The client learns only that it is not allowed; the log
records which requirement failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringwall.config.model import AuthorizeRule, OwnerRule, RoleRule
from ringwall.errors import Forbidden, Unauthorized
from ringwall.gateway.identity import Identity, claim_at

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute

LAYER = "authorization"
_NOT_ALLOWED = "the caller is not allowed to make this request"


class AuthorizationLayer:
    name = LAYER

    def applies_to(self, route: CompiledRoute) -> bool:
        return bool(route.route.authorize)

    def check_head(self, exchange: Exchange) -> None:
        route = exchange.route
        assert route is not None
        rules = route.route.authorize
        if not rules:
            return
        identity = exchange.identity
        if identity is None:
            for rule in rules:
                if not rule.methods or exchange.method in rule.methods:
                    raise Unauthorized(
                        LAYER,
                        "credentials are required for this request",
                        headers=(("WWW-Authenticate", 'Bearer realm="ringwall"'),),
                    )
            return
        # Roles and scopes depend on the identity alone, so they are checked
        # once per identity, rule list and method: a cached token serves many
        # requests. Ownership depends on the path and is checked every time.
        key = (id(rules), exchange.method)
        cached = identity.decisions.get(key)
        if cached is None or cached[0] is not rules:
            cached = (rules, *_grants(rules, exchange.method, identity))
            if len(identity.decisions) < _MAX_DECISIONS:
                identity.decisions[key] = cached
        _, problem, owner_rules = cached
        if not problem:
            for owner in owner_rules:
                problem = _not_owner(owner, identity, exchange.params)
                if problem:
                    break
        if problem:
            raise Forbidden(LAYER, problem, detail=_NOT_ALLOWED)


# Bounds the per-identity decision memo; beyond it, decisions are just not kept.
_MAX_DECISIONS = 64


def _grants(
    rules: tuple[AuthorizeRule, ...], method: str, identity: Identity
) -> tuple[str, tuple[OwnerRule, ...]]:
    """Return the first unmet role or scope requirement ("" if none) and the ownership rules."""
    owners = []
    for rule in rules:
        if rule.methods and method not in rule.methods:
            continue
        problem = _missing(rule.roles, identity.roles, "role") or _missing(
            rule.scopes, identity.scopes, "scope"
        )
        if problem:
            return problem, ()
        if rule.owner is not None:
            owners.append(rule.owner)
    return "", tuple(owners)


def _not_owner(owner: OwnerRule, identity: Identity, params: dict[str, str]) -> str:
    value = params.get(owner.param)
    claim = claim_at(identity.claims, owner.claim)
    owned = (
        claim == value
        if isinstance(claim, str)
        else (isinstance(claim, list | tuple) and value in claim)
    )
    if value is None or not owned:
        return f"path parameter {owner.param} is not in claim {owner.claim} of {identity.subject}"
    return ""


def _missing(rule: RoleRule, granted: frozenset[str], kind: str) -> str:
    if rule.all_of and not granted.issuperset(rule.all_of):
        return f"missing {kind}s: {', '.join(sorted(set(rule.all_of) - granted))}"
    if rule.any_of and granted.isdisjoint(rule.any_of):
        return f"needs one {kind} of: {', '.join(rule.any_of)}"
    return ""
