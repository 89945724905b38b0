"""The validation layer's JSON body check: a body complete at check time, and one still arriving."""

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from ringwall.config.validation import ValidateConfig
from ringwall.errors import BadRequest
from ringwall.exchange import Exchange
from ringwall.gateway.validation.layer import RouteValidation
from ringwall.server.body import RequestBody

SCHEMA = {
    "type": "object",
    "required": ["quantity"],
    "properties": {"quantity": {"type": "integer", "minimum": 1}},
}


def validation(**config: Any) -> RouteValidation:
    return RouteValidation(ValidateConfig.model_validate(config))


def json_route(content_types: list[str] | None = None) -> RouteValidation:
    types = ["application/json"] if content_types is None else content_types
    return validation(content_types=types, json={"schema": SCHEMA})


def post(content_type: bytes = b"application/json") -> Exchange:
    no_runtime: Any = None
    exchange = Exchange(no_runtime, "127.0.0.1", 0.0, 0.0)
    exchange.method = "POST"
    exchange.headers = [(b"Content-Type", content_type)]
    exchange.has_body = True
    exchange.body = RequestBody(1024, lambda: None, lambda: None)
    return exchange


def complete(exchange: Exchange, data: bytes) -> Exchange:
    assert exchange.body is not None
    exchange.body.feed(data)
    exchange.body.finish()
    return exchange


def test_complete_valid_body_checked_at_once() -> None:
    route = json_route()
    exchange = complete(post(), b'{"quantity": 2}')
    route.check_head(exchange)
    assert route.needs_body(exchange)
    assert route.check_body(exchange) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"quantity": 0}', "body /quantity: must be >= 1"),
        (b'{"quantity": 1, "quantity": 2}', "body /quantity: duplicate key"),
        (b'{"quantity": NaN}', "body /quantity: NaN is not valid JSON"),
        (b'{"quantity": 1', "body the body: invalid JSON"),
    ],
)
def test_complete_invalid_body_rejected_at_once(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        json_route().check_body(complete(post(), data))


def test_arriving_body_checked_when_complete() -> None:
    route = json_route()
    exchange = post()
    body = exchange.body
    assert body is not None
    body.feed(b'{"quantity"')
    pending = route.check_body(exchange)
    assert pending is not None

    async def finish_body(waiting: Awaitable[None]) -> None:
        checking = asyncio.ensure_future(waiting)
        await asyncio.sleep(0)
        assert not checking.done()
        body.feed(b": 0}")
        body.finish()
        await checking

    with pytest.raises(BadRequest, match="must be >= 1"):
        asyncio.run(finish_body(pending))


def test_failed_body_reported_by_awaitable() -> None:
    exchange = post()
    body = exchange.body
    assert body is not None
    body.feed(b"{}")
    body.finish()
    body.fail(BadRequest("protocol", "client connection lost"))
    pending = json_route().check_body(exchange)
    assert pending is not None

    async def wait(waiting: Awaitable[None]) -> None:
        await waiting

    with pytest.raises(BadRequest, match="client connection lost"):
        asyncio.run(wait(pending))


def test_checked_body_still_forwarded() -> None:
    exchange = post()
    body = exchange.body
    assert body is not None
    body.feed(b'{"quantity"')
    body.feed(b": 3}")
    body.finish()
    assert json_route().check_body(exchange) is None

    async def drain() -> list[bytes | None]:
        return [await body.read(), await body.read()]

    assert asyncio.run(drain()) == [b'{"quantity": 3}', None]


@pytest.mark.parametrize(
    ("content_types", "content_type", "expected"),
    [
        (["application/json"], b"application/json", True),
        (["application/json", "application/problem+json"], b"application/problem+json", True),
        (["application/json", "text/plain"], b"application/json; charset=utf-8", True),
        (["application/json", "text/plain"], b"text/plain", False),
        ([], b"text/plain", False),
        ([], b"application/vnd.api+json", True),
    ],
)
def test_needs_body_by_media_type(
    content_types: list[str], content_type: bytes, expected: bool
) -> None:
    route = json_route(content_types)
    exchange = complete(post(content_type), b"{}")
    route.check_head(exchange)
    assert route.needs_body(exchange) is expected
