"""The decompression layer: a route's gzip or deflate request body, decoded before it is checked.

On a route with `decompress`, a body with an accepted Content-Encoding is
read whole (up to the route's body limit) and decoded by
`ringwall.http.decompress` within `max_bytes` and `max_ratio`. The decoded
bytes replace the received ones, so the layers after this one (the WAF,
validation) check the bytes the upstream receives. Content-Encoding is
removed from the request, and the upstream gets a Content-Length of the
decoded size. A coding the route does not accept gets 415.

NOTE: decoding runs on the event loop, so a large `max_bytes` (tens of MiB)
blocks the worker for each such request while zlib inflates it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringwall.http.decompress import LAYER, content_coding, decode_body

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute
    from ringwall.server.body import RequestBody


@dataclass(frozen=True, slots=True)
class DecompressPolicy:
    """One route's accepted content codings and limits on the decoded body."""

    encodings: tuple[str, ...]
    max_bytes: int
    max_ratio: int


class DecompressionLayer:
    """Decode request bodies on the routes in `policies`, by route name."""

    name = LAYER

    def __init__(self, policies: Mapping[str, DecompressPolicy]) -> None:
        self.policies = policies

    def applies_to(self, route: CompiledRoute) -> bool:
        return route.name in self.policies

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        if not exchange.has_body:
            return None
        route = exchange.route
        assert route is not None
        policy = self.policies[route.name]
        coding = content_coding(exchange.header_values(b"content-encoding"), policy.encodings)
        if coding is None:
            return None
        body = exchange.body
        assert body is not None
        if body.complete and body.error is None:
            _decode(exchange, body, body.whole(), coding, policy)
            return None
        return self._collect_and_decode(exchange, body, coding, policy)

    async def _collect_and_decode(
        self, exchange: Exchange, body: RequestBody, coding: str, policy: DecompressPolicy
    ) -> None:
        _decode(exchange, body, await body.collect(), coding, policy)


def _decode(
    exchange: Exchange, body: RequestBody, data: bytes, coding: str, policy: DecompressPolicy
) -> None:
    """Replace the body with its decoded bytes, and the fields that describe it."""
    decoded = decode_body(data, coding, max_bytes=policy.max_bytes, max_ratio=policy.max_ratio)
    body.replace(decoded)
    length = b"%d" % len(decoded)
    exchange.headers = [
        (name, length if name.lower() == b"content-length" else value)
        for name, value in exchange.headers
        if name.lower() != b"content-encoding"
    ]
    forward = [
        field for field in exchange.forward_headers if field[0].lower() != b"content-encoding"
    ]
    exchange.forward_headers = forward
    if exchange.authorization_at >= 0:
        # The index of the last Authorization field, as `read_request_headers` sets it.
        # Authentication may have removed it already, on a route where this layer runs later.
        exchange.authorization_at = max(
            (index for index, (name, _) in enumerate(forward) if name.lower() == b"authorization"),
            default=-1,
        )
    if exchange.content_length is not None:
        exchange.content_length = len(decoded)
    # A body that decodes to nothing is checked as no body, like Content-Length: 0.
    exchange.has_body = bool(decoded)
