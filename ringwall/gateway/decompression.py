"""The decompression layer: a route's gzip or deflate request body, decoded before it is checked.

On a route with `decompress`, a body with an accepted Content-Encoding is
read whole (up to the route's body limit) and decoded by
`ringwall.http.decompress` within `max_bytes` and `max_ratio`. The decoded
bytes replace the received ones, so the layers after this one (the WAF,
validation) check the bytes the upstream receives. Content-Encoding is
removed from the request, and the upstream gets a Content-Length of the
decoded size. A coding the route does not accept gets 415.

A body of up to THREAD_THRESHOLD compressed bytes is decoded on the event
loop. A larger one is decoded in the loop's default thread pool: CPython's
zlib module releases the GIL while zlib inflates, so the loop serves other
requests meanwhile. Under load the decoding thread waits for the GIL after
each inflate step, so such a request takes longer, but it no longer stalls
the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringwall.http.decompress import LAYER, content_coding, decode_body

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute
    from ringwall.server.body import RequestBody

# Compressed bodies larger than this are decoded in a thread. 16 KiB that
# expands tenfold takes about 0.3 ms on the loop, at the 570 MB/s of output
# measured for a JSON-like body on the benchmark machine.
THREAD_THRESHOLD = 16 * 1024


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
            data = body.whole()
            if len(data) <= THREAD_THRESHOLD:
                decoded = decode_body(
                    data, coding, max_bytes=policy.max_bytes, max_ratio=policy.max_ratio
                )
                _replace_body(exchange, body, decoded)
                return None
        return self._collect_and_decode(exchange, body, coding, policy)

    async def _collect_and_decode(
        self, exchange: Exchange, body: RequestBody, coding: str, policy: DecompressPolicy
    ) -> None:
        data = await body.collect()
        if len(data) <= THREAD_THRESHOLD:
            decoded = decode_body(
                data, coding, max_bytes=policy.max_bytes, max_ratio=policy.max_ratio
            )
        else:
            decoded = await asyncio.get_running_loop().run_in_executor(
                None, _decode_in_thread, data, coding, policy
            )
        _replace_body(exchange, body, decoded)


def _decode_in_thread(data: bytes, coding: str, policy: DecompressPolicy) -> bytes:
    return decode_body(data, coding, max_bytes=policy.max_bytes, max_ratio=policy.max_ratio)


def _replace_body(exchange: Exchange, body: RequestBody, decoded: bytes) -> None:
    """Replace the body with its decoded bytes, and the fields that describe it."""
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
