"""Per-IP and per-header rate limits, before authentication.

Edge limits (`limits.edge`) run before routing, so every request counts,
including those that get 404. A route's limits whose key names no caller
(`ip`, `route`, `header:NAME`) run right after routing, before the body
limit and authentication, so a flood of requests refused later still
counts. Limits per caller run in `ringwall.gateway.quota`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING

from ringwall.limits.limiter import CompiledLimit, Limiter

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute

LAYER = "rate_limit"


class EdgeRateLimitLayer:
    """The gateway-wide limits, checked on every request before routing."""

    name = LAYER

    def __init__(self, limiter: Limiter, limits: tuple[CompiledLimit, ...]) -> None:
        self.limiter = limiter
        self.limits = limits
        self.check_head = limiter.checker(limits, LAYER)


class RouteRateLimitLayer:
    """A route's limits that do not depend on the caller's identity."""

    name = LAYER

    def __init__(self, limiter: Limiter, limits: Mapping[str, tuple[CompiledLimit, ...]]) -> None:
        self.limiter = limiter
        self.limits = limits
        self.checks = {name: limiter.checker(route, LAYER) for name, route in limits.items()}

    def applies_to(self, route: CompiledRoute) -> bool:
        return route.name in self.limits

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        route = exchange.route
        assert route is not None
        return self.checks[route.name](exchange)
