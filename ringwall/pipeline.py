"""The ordered layers a request passes before it is forwarded.

A layer is one check or transformation of the request, such as routing or
a body size limit. Each layer sees the request head once it is complete;
a layer raises a `Rejection` to stop the request there. A layer that needs
I/O (a Redis round trip, a key fetch) returns an awaitable instead of None,
and only then does the pipeline await, so purely local layers cost no
coroutine switch.

Later layers slot in by position in `LAYER_ORDER`: edge checks first (IP
rules, per-IP limits, WAF), then gateway checks (authentication, per-caller
limits, validation, authorization), then routing to the upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ringwall.exchange import Exchange


class Layer(Protocol):
    name: str

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        """Check the complete request head; raise `Rejection` to refuse the request."""


class Pipeline:
    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = tuple(layers)

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        """Run every layer; return an awaitable for the rest once a layer needs I/O."""
        for index, layer in enumerate(self.layers):
            pending = layer.check_head(exchange)
            if pending is not None:
                return self._finish(pending, index + 1, exchange)
        return None

    async def _finish(self, pending: Awaitable[None], start: int, exchange: Exchange) -> None:
        await pending
        for layer in self.layers[start:]:
            pending_next = layer.check_head(exchange)
            if pending_next is not None:
                await pending_next
