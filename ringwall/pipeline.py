"""The ordered layers a request passes before it is forwarded.

A layer is one check or transformation of the request, such as routing or
a body size limit. Each layer checks the request head once it is complete,
and raises a `Rejection` to stop the request there. A layer that needs
I/O (a Redis round trip, a key fetch) returns an awaitable instead of None,
and only then does the pipeline await, so purely local layers cost no
coroutine switch.

Layers before routing run for every request. Layers after it run only on
the routes they apply to (`applies_to`), so a public route pays nothing for
authentication. The order: edge checks (IP rules, per-IP limits, WAF),
routing, the body limit, then gateway checks (authentication, per-caller
limits, validation, authorization) and the audit record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute


class Layer(Protocol):
    name: str

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        """Check the complete request head; raise `Rejection` to refuse the request."""


class Pipeline:
    def __init__(
        self,
        before_routing: Sequence[Layer],
        routing: Layer,
        after_routing: Sequence[Layer] = (),
        routes: Sequence[CompiledRoute] = (),
    ) -> None:
        self.before_routing = tuple(before_routing)
        self.routing = routing
        self.after_routing = tuple(after_routing)
        for route in routes:
            route.layers = tuple(layer for layer in self.after_routing if _applies(layer, route))

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        """Run every layer; return an awaitable for the rest once a layer needs I/O."""
        for index, layer in enumerate(self.before_routing):
            pending = layer.check_head(exchange)
            if pending is not None:
                return self._continue_before_routing(pending, index + 1, exchange)
        return self._route_and_check(exchange)

    def _route_and_check(self, exchange: Exchange) -> Awaitable[None] | None:
        # Routing itself never waits: it only reads the configuration.
        self.routing.check_head(exchange)
        route = exchange.route
        assert route is not None
        layers = route.layers
        last = len(layers) - 1
        for index, layer in enumerate(layers):
            pending = layer.check_head(exchange)
            if pending is not None:
                if index == last:
                    return pending  # no layer left to run after it
                return self._continue(pending, layers[index + 1 :], exchange)
        return None

    async def _continue_before_routing(
        self, pending: Awaitable[None], start: int, exchange: Exchange
    ) -> None:
        await pending
        for layer in self.before_routing[start:]:
            pending_next = layer.check_head(exchange)
            if pending_next is not None:
                await pending_next
        pending_route = self._route_and_check(exchange)
        if pending_route is not None:
            await pending_route

    async def _continue(
        self, pending: Awaitable[None], rest: Sequence[Layer], exchange: Exchange
    ) -> None:
        await pending
        for layer in rest:
            pending_next = layer.check_head(exchange)
            if pending_next is not None:
                await pending_next


def _applies(layer: Layer, route: CompiledRoute) -> bool:
    """Return False only for a layer whose `applies_to` excludes `route`."""
    applies_to = getattr(layer, "applies_to", None)
    return applies_to is None or bool(applies_to(route))
