"""Rate limits and quotas per caller: by subject or API key, after authorization.

These limits run after authentication and authorization, so only requests
the gateway would otherwise forward are counted: a caller's paid quota is
not spent on requests it refused. A limit's tiers pick the rate by the
caller's roles or key scopes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

from ringwall.limits.limiter import CompiledLimit, Limiter

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute

LAYER = "quota"


class QuotaLayer:
    """A route's limits keyed by the caller's subject or API key."""

    name = LAYER

    def __init__(self, limiter: Limiter, limits: Mapping[str, tuple[CompiledLimit, ...]]) -> None:
        self.limiter = limiter
        self.limits = limits

    def applies_to(self, route: CompiledRoute) -> bool:
        return route.name in self.limits

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        route = exchange.route
        assert route is not None
        if exchange.identity is None:
            # An anonymous caller of a route with optional authentication has
            # no subject or key to count: the route's IP limits apply to it.
            return None
        return self.limiter.check(exchange, self.limits[route.name], LAYER)
