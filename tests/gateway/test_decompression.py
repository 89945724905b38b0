"""Tests for ringwall.gateway.decompression: the body and fields after decoding."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import zlib
from typing import Any

import pytest

from ringwall.config import Route
from ringwall.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from ringwall.exchange import Exchange
from ringwall.gateway import decompression
from ringwall.gateway.decompression import THREAD_THRESHOLD, DecompressionLayer, DecompressPolicy
from ringwall.gateway.routing import CompiledRoute
from ringwall.http.decompress import decode_body
from ringwall.server.body import RequestBody

JSON = b'{"product_id": 42, "quantity": 2}'
POLICY = DecompressPolicy(encodings=("gzip", "deflate"), max_bytes=1024, max_ratio=100)


def layer(policy: DecompressPolicy = POLICY) -> DecompressionLayer:
    return DecompressionLayer({"orders": policy})


def post(
    data: bytes,
    encoding: bytes | None = b"gzip",
    *,
    complete: bool = True,
    chunked: bool = False,
) -> Exchange:
    no_runtime: Any = None
    exchange = Exchange(no_runtime, "127.0.0.1", 0.0, 0.0)
    exchange.method = "POST"
    route = Route(name="orders", path="/orders", upstream="api", auth="none")
    exchange.route = CompiledRoute(route, 0)
    framing = (
        (b"Transfer-Encoding", b"chunked") if chunked else (b"Content-Length", b"%d" % len(data))
    )
    coding = [(b"Content-Encoding", encoding)] if encoding is not None else []
    exchange.headers = [
        (b"Host", b"api.example.test"),
        (b"Authorization", b"Bearer abc"),
        (b"Content-Type", b"application/json"),
        *coding,
        framing,
    ]
    # As read_request_headers builds it: without framing fields.
    exchange.forward_headers = [field for field in exchange.headers if field[0] != framing[0]]
    exchange.authorization = [b"Bearer abc"]
    exchange.authorization_at = 1
    exchange.content_length = None if chunked else len(data)
    exchange.chunked = chunked
    exchange.has_body = True
    exchange.body = RequestBody(1 << 20, lambda: None, lambda: None)
    if data:
        exchange.body.feed(data)
    if complete:
        exchange.body.finish()
    return exchange


def body_bytes(exchange: Exchange) -> bytes:
    assert exchange.body is not None
    return exchange.body.whole()


def test_layer_name_and_routes() -> None:
    decompression = layer()
    assert decompression.name == "decompression"
    orders = Route(name="orders", path="/orders", upstream="api", auth="none")
    other = Route(name="other", path="/other", upstream="api", auth="none")
    assert decompression.applies_to(CompiledRoute(orders, 0))
    assert not decompression.applies_to(CompiledRoute(other, 1))


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        (b"gzip", gzip.compress(JSON)),
        (b"deflate", zlib.compress(JSON)),
        (b"X-GZIP", gzip.compress(JSON)),
    ],
)
def test_complete_body_decoded_at_once(encoding: bytes, data: bytes) -> None:
    exchange = post(data, encoding)
    assert layer().check_head(exchange) is None
    assert body_bytes(exchange) == JSON
    assert exchange.body is not None
    assert exchange.body.received == len(JSON)
    assert exchange.content_length == len(JSON)
    assert exchange.has_body
    assert exchange.header_values(b"content-encoding") == []
    assert exchange.header_values(b"content-length") == [b"%d" % len(JSON)]
    assert exchange.header_values(b"content-type") == [b"application/json"]
    assert not exchange.body_encoded()
    names = [name for name, _ in exchange.forward_headers]
    assert names == [b"Host", b"Authorization", b"Content-Type"]
    assert exchange.authorization_at == 1


def test_chunked_body_decoded_after_it_arrives() -> None:
    data = gzip.compress(JSON)
    exchange = post(data[:5], chunked=True, complete=False)

    async def run() -> None:
        pending = layer().check_head(exchange)
        assert pending is not None
        assert exchange.body is not None
        exchange.body.feed(data[5:])
        exchange.body.finish()
        await pending

    asyncio.run(run())
    assert body_bytes(exchange) == JSON
    # No Content-Length was declared: the forwarder sends the body's length.
    assert exchange.content_length is None
    assert exchange.body is not None
    assert exchange.body.received == len(JSON)
    assert exchange.header_values(b"transfer-encoding") == [b"chunked"]
    assert exchange.header_values(b"content-encoding") == []


def test_large_body_decoded_in_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = os.urandom(THREAD_THRESHOLD * 2)  # random bytes do not compress
    data = gzip.compress(plain)
    assert len(data) > THREAD_THRESHOLD
    threads: list[int] = []

    def recording_decode(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        return decode_body(*args, **kwargs)

    monkeypatch.setattr(decompression, "decode_body", recording_decode)
    policy = DecompressPolicy(encodings=("gzip",), max_bytes=1 << 20, max_ratio=100)
    exchange = post(data)
    pending = layer(policy).check_head(exchange)
    assert pending is not None

    async def run() -> None:
        await pending

    asyncio.run(run())
    assert body_bytes(exchange) == plain
    assert exchange.content_length == len(plain)
    assert threads != [threading.get_ident()]


def test_large_bomb_rejected_in_thread() -> None:
    data = gzip.compress(os.urandom(THREAD_THRESHOLD * 2) + b"\x00" * (4 << 20))
    policy = DecompressPolicy(encodings=("gzip",), max_bytes=1 << 20, max_ratio=100)
    exchange = post(data)
    pending = layer(policy).check_head(exchange)
    assert pending is not None

    async def run() -> None:
        await pending

    with pytest.raises(PayloadTooLarge):
        asyncio.run(run())
    assert body_bytes(exchange) == data


def test_authorization_index_after_authentication() -> None:
    exchange = post(gzip.compress(JSON))
    # Authentication drops the field from what is forwarded, and leaves the index.
    del exchange.forward_headers[1]
    layer().check_head(exchange)
    assert exchange.authorization_at == -1


def test_empty_decoded_body_is_no_body() -> None:
    exchange = post(gzip.compress(b""))
    layer().check_head(exchange)
    assert not exchange.has_body
    assert body_bytes(exchange) == b""
    assert exchange.content_length == 0


@pytest.mark.parametrize("encoding", [None, b"identity", b""])
def test_body_without_coding_unchanged(encoding: bytes | None) -> None:
    exchange = post(JSON, encoding)
    headers = list(exchange.headers)
    assert layer().check_head(exchange) is None
    assert body_bytes(exchange) == JSON
    assert exchange.headers == headers


def test_request_without_body_not_checked() -> None:
    exchange = post(b"", b"br")
    exchange.has_body = False
    assert layer().check_head(exchange) is None


def test_unsupported_coding_rejected() -> None:
    exchange = post(b"\x00" * 10, b"br")
    with pytest.raises(UnsupportedMediaType) as caught:
        layer().check_head(exchange)
    assert caught.value.headers == (("Accept-Encoding", "gzip, deflate"),)


def test_coding_not_accepted_on_route_rejected() -> None:
    policy = DecompressPolicy(encodings=("gzip",), max_bytes=1024, max_ratio=100)
    with pytest.raises(UnsupportedMediaType) as caught:
        layer(policy).check_head(post(zlib.compress(JSON), b"deflate"))
    assert "expected one of gzip" in caught.value.reason


def test_bomb_rejected_and_body_kept() -> None:
    data = gzip.compress(bytes(64 * 1024))
    exchange = post(data)
    with pytest.raises(PayloadTooLarge):
        layer().check_head(exchange)
    # Nothing is replaced, and the request is rejected before any forwarding.
    assert body_bytes(exchange) == data
    assert exchange.header_values(b"content-encoding") == [b"gzip"]


def test_corrupt_body_rejected() -> None:
    with pytest.raises(BadRequest):
        layer().check_head(post(gzip.compress(JSON)[:-3]))
