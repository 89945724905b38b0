"""CORS and security headers through a real gateway: preflights, reflected origins, defaults."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Response, request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.raw_upstream import RawUpstream

ORIGIN = "https://app.example.test"


def config_text(upstream_port: int) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - name: api
    path: /api
    methods: [GET, POST]
    upstream: app
    auth: none
    cors:
      allow_origins: ["{ORIGIN}"]
      allow_methods: [GET, POST]
      allow_headers: [Content-Type, Authorization]
      max_age: 10m
    limits:
      - {{name: per-ip, key: [ip], rate: 3/minute}}
  - name: plain
    path: /plain
    upstream: app
    auth: none
"""


@pytest.fixture
def gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    with running_gateway(config_text(upstream.port), tmp_path) as server:
        yield server


def send(gateway: GatewayThread, method: str, path: str, *fields: str) -> Response:
    head = f"{method} {path} HTTP/1.1\r\nHost: a\r\n" + "".join(f"{f}\r\n" for f in fields)
    return request(gateway.port, (head + "\r\n").encode())


def test_allowed_origin_reflected(gateway: GatewayThread) -> None:
    response = send(gateway, "GET", "/api/x", f"Origin: {ORIGIN}")
    assert response.status == 200
    assert response.header("Access-Control-Allow-Origin") == ORIGIN
    assert "Origin" in response.header_list("Vary")


@pytest.mark.parametrize(
    "origin", ["https://app.example.test.evil.test", "null", "http://app.example.test"]
)
def test_other_origins_get_no_cors_fields(gateway: GatewayThread, origin: str) -> None:
    response = send(gateway, "GET", "/api/x", f"Origin: {origin}")
    assert response.status == 200
    assert response.header("Access-Control-Allow-Origin") is None


def test_preflight_answered_without_upstream(gateway: GatewayThread, upstream: RawUpstream) -> None:
    response = send(
        gateway,
        "OPTIONS",
        "/api/orders",
        f"Origin: {ORIGIN}",
        "Access-Control-Request-Method: POST",
        "Access-Control-Request-Headers: content-type",
    )
    assert response.status == 204
    assert response.header("Access-Control-Allow-Origin") == ORIGIN
    assert response.header("Access-Control-Max-Age") == "600"
    assert response.header("Content-Length") is None
    assert upstream.requests == []


def test_refused_preflight_has_no_grant(gateway: GatewayThread) -> None:
    response = send(
        gateway,
        "OPTIONS",
        "/api/orders",
        f"Origin: {ORIGIN}",
        "Access-Control-Request-Method: DELETE",
    )
    assert response.status == 204
    assert response.header("Access-Control-Allow-Origin") is None


def test_plain_options_is_405(gateway: GatewayThread) -> None:
    assert send(gateway, "OPTIONS", "/api/orders").status == 405


def test_preflights_count_against_ip_limit(gateway: GatewayThread) -> None:
    preflight = (f"Origin: {ORIGIN}", "Access-Control-Request-Method: GET")
    statuses = [send(gateway, "OPTIONS", "/api/x", *preflight).status for _ in range(3)]
    assert statuses == [204, 204, 204]
    refused = send(gateway, "GET", "/api/x", f"Origin: {ORIGIN}")
    assert refused.status == 429
    # A browser may read the refusal: it carries the CORS fields too.
    assert refused.header("Access-Control-Allow-Origin") == ORIGIN


def test_security_headers_by_default(gateway: GatewayThread) -> None:
    response = send(gateway, "GET", "/plain")
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Referrer-Policy") == "no-referrer"
    assert response.header("Strict-Transport-Security") is None  # plain HTTP listener
