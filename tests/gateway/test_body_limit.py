"""Tests for ringwall.gateway.body_limit: per-route body size limits."""

from dataclasses import dataclass
from typing import Any

import pytest

from ringwall.config import Route
from ringwall.errors import PayloadTooLarge
from ringwall.exchange import Exchange
from ringwall.gateway.body_limit import BodyLimitLayer
from ringwall.gateway.routing import CompiledRoute

DEFAULT_LIMIT = 1000


@dataclass
class FakeBody:
    """The two fields of `RequestBody` that the layer reads and sets."""

    limit: int
    received: int = 0


def make_exchange(
    route_limit: int | None = None,
    *,
    routed: bool = True,
    content_length: int | None = None,
    body: FakeBody | None = None,
) -> Exchange:
    # The layer never reads the runtime.
    no_runtime: Any = None
    exchange = Exchange(no_runtime, peer_ip="127.0.0.1", started=0.0, wall_started=0.0)
    if routed:
        route = Route(name="r", path="/", upstream="api", auth="none", max_body_bytes=route_limit)
        exchange.route = CompiledRoute(route, 0)
    exchange.content_length = content_length
    exchange.has_body = bool(content_length) or body is not None
    exchange.body = body  # type: ignore[assignment]  # FakeBody has the fields the layer uses
    return exchange


@pytest.fixture
def layer() -> BodyLimitLayer:
    return BodyLimitLayer(DEFAULT_LIMIT)


def test_layer_name(layer: BodyLimitLayer) -> None:
    assert layer.name == "limits"


@pytest.mark.parametrize(
    ("options", "limit"),
    [
        ({"routed": False}, DEFAULT_LIMIT),
        ({"route_limit": None}, DEFAULT_LIMIT),
        ({"route_limit": 50}, 50),
        ({"route_limit": 5000}, 5000),
        ({"route_limit": 0}, 0),
    ],
)
def test_limit_for(layer: BodyLimitLayer, options: dict[str, Any], limit: int) -> None:
    assert layer.limit_for(make_exchange(**options)) == limit


@pytest.mark.parametrize(
    ("route_limit", "content_length"),
    [(None, None), (None, 0), (None, DEFAULT_LIMIT), (50, 50), (5000, 5000), (0, 0)],
)
def test_declared_length_allowed(
    layer: BodyLimitLayer, route_limit: int | None, content_length: int | None
) -> None:
    layer.check_head(make_exchange(route_limit, content_length=content_length))


@pytest.mark.parametrize(
    ("route_limit", "content_length", "limit"),
    [
        (None, DEFAULT_LIMIT + 1, DEFAULT_LIMIT),
        (50, 51, 50),
        (50, DEFAULT_LIMIT, 50),
        (5000, 5001, 5000),
        (0, 1, 0),
    ],
)
def test_declared_length_too_large(
    layer: BodyLimitLayer, route_limit: int | None, content_length: int, limit: int
) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        layer.check_head(make_exchange(route_limit, content_length=content_length))

    assert caught.value.status == 413
    assert caught.value.layer == "limits"
    assert caught.value.close is True
    assert f"limit of {limit} bytes" in caught.value.reason


def test_body_limit_set(layer: BodyLimitLayer) -> None:
    body = FakeBody(limit=10**9)

    layer.check_head(make_exchange(50, body=body))

    assert body.limit == 50


def test_body_limit_default(layer: BodyLimitLayer) -> None:
    body = FakeBody(limit=10**9)

    layer.check_head(make_exchange(None, body=body))

    assert body.limit == DEFAULT_LIMIT


def test_body_received_within_limit(layer: BodyLimitLayer) -> None:
    layer.check_head(make_exchange(50, body=FakeBody(limit=10**9, received=50)))


def test_body_received_over_limit(layer: BodyLimitLayer) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        layer.check_head(make_exchange(50, body=FakeBody(limit=10**9, received=51)))

    assert caught.value.close is True
    assert caught.value.layer == "limits"
