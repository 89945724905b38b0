"""Refuse a request whose declared body is larger than its route allows.

A chunked body has no declared size; its limit is enforced while it streams
(see `RequestBody`), so an oversized chunked body is cut off before the
upstream receives a complete request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringwall.errors import PayloadTooLarge

if TYPE_CHECKING:
    from ringwall.exchange import Exchange

LAYER = "limits"


class BodyLimitLayer:
    name = LAYER

    def __init__(self, default_limit: int) -> None:
        self.default_limit = default_limit

    def limit_for(self, exchange: Exchange) -> int:
        route = exchange.route
        if route is not None and route.route.max_body_bytes is not None:
            return route.route.max_body_bytes
        return self.default_limit

    def check_head(self, exchange: Exchange) -> None:
        if not exchange.has_body:
            return
        limit = self.limit_for(exchange)
        if exchange.content_length is not None and exchange.content_length > limit:
            raise PayloadTooLarge(
                LAYER, f"the request body exceeds the limit of {limit} bytes", close=True
            )
        body = exchange.body
        if body is not None:
            body.limit = limit
            if body.received > limit:
                raise PayloadTooLarge(
                    LAYER, f"the request body exceeds the limit of {limit} bytes", close=True
                )
