"""Per-IP rate limits through a real gateway: 429, Retry-After and the RateLimit fields."""

import time
from pathlib import Path

from tests.support.client import Response, request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.raw_upstream import RawUpstream


def config_text(upstream_port: int, rate: str = "3/minute", edge: str = "") -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
limits:
  edge: [{edge}]
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - name: products
    path: /products
    upstream: app
    auth: none
    limits:
      - {{name: per-ip, key: [ip], rate: "{rate}"}}
  - name: open
    path: /open
    upstream: app
    auth: none
"""


def get(gateway: GatewayThread, path: str) -> Response:
    return request(gateway.port, b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode())


def test_limit_allows_burst_then_429(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port), tmp_path) as gateway:
        statuses = [get(gateway, "/products").status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert len(upstream.requests) == 3


def test_allowed_response_carries_ratelimit_fields(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port), tmp_path) as gateway:
        response = get(gateway, "/products")
        assert response.header("RateLimit-Policy") == '"per-ip";q=3;w=60'
        state = response.header("RateLimit")
        assert state is not None
        assert state.startswith('"per-ip";r=2;t=')
        assert 20 <= int(state.rsplit("=", 1)[1]) <= 21


def test_429_is_problem_with_retry_after(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port), tmp_path) as gateway:
        for _ in range(3):
            get(gateway, "/products")
        response = get(gateway, "/products")
        assert response.status == 429
        assert response.header("Content-Type") == "application/problem+json"
        assert response.json()["layer"] == "rate_limit"
        assert response.json()["request_id"] == response.header("X-Request-Id")
        assert response.header("Retry-After") == "20"
        assert response.header("RateLimit-Policy") == '"per-ip";q=3;w=60'
        assert (response.header("RateLimit") or "").startswith('"per-ip";r=0;t=')


def test_allowed_again_after_retry_after(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port, rate="2/2s"), tmp_path) as gateway:
        assert [get(gateway, "/products").status for _ in range(3)] == [200, 200, 429]
        refused = get(gateway, "/products")
        wait = int(refused.header("Retry-After") or "0")
        assert wait == 1
        time.sleep(wait)
        assert get(gateway, "/products").status == 200


def test_unlimited_route_has_no_fields(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port), tmp_path) as gateway:
        response = get(gateway, "/open")
        assert response.status == 200
        assert response.header("RateLimit") is None


def test_edge_limit_counts_404s(upstream: RawUpstream, tmp_path: Path) -> None:
    edge = '{name: flood, rate: "2/minute"}'
    with running_gateway(config_text(upstream.port, edge=edge), tmp_path) as gateway:
        assert get(gateway, "/missing").status == 404
        assert get(gateway, "/missing").status == 404
        response = get(gateway, "/open")
        assert response.status == 429
        assert response.json()["layer"] == "rate_limit"
        assert upstream.requests == []


def test_spoofed_forwarded_for_does_not_change_key(upstream: RawUpstream, tmp_path: Path) -> None:
    # No trusted proxies: X-Forwarded-For from the client is ignored for the key.
    with running_gateway(config_text(upstream.port), tmp_path) as gateway:
        statuses = [
            request(
                gateway.port,
                b"GET /products HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.%d\r\n\r\n" % n,
            ).status
            for n in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]


def test_many_keys_keep_store_bounded(upstream: RawUpstream, tmp_path: Path) -> None:
    # A store of 64 slots per table, behind a trusted proxy that sends 500 client addresses.
    text = (
        config_text(upstream.port)
        .replace("\nlimits:\n", "\nlimits:\n  store: {max_keys: 64}\n")
        .replace(
            "  timeouts: {drain: 1s}\n",
            "  timeouts: {drain: 1s}\n  trusted_proxies: [127.0.0.1/32]\n",
        )
    )
    with running_gateway(text, tmp_path) as gateway:
        for n in range(500):
            response = request(
                gateway.port,
                b"GET /products HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.%d.%d\r\n\r\n"
                % (n // 256, n % 256),
            )
            assert response.status == 200
        runtime = gateway.worker.runtime if gateway.worker else None
        assert runtime is not None and runtime.shared is not None
        stats = runtime.shared.stats()
        assert stats["rate_entries"] <= 64
        # 500 live keys in 64 slots: the rest replaced live entries, each counted.
        assert stats["rate_evictions"] >= 500 - 64


def test_quota_refusal_reset_not_before_retry_after(upstream: RawUpstream, tmp_path: Path) -> None:
    text = config_text(upstream.port).replace(
        '{name: per-ip, key: [ip], rate: "3/minute"}', '{name: q, key: [ip], quota: "3/10s"}'
    )
    with running_gateway(text, tmp_path) as gateway:
        for _ in range(3):
            assert get(gateway, "/products").status == 200
        refused = get(gateway, "/products")
        assert refused.status == 429
        retry_after = int(refused.header("Retry-After") or "0")
        reset = int((refused.header("RateLimit") or "").rsplit("t=", 1)[1])
        assert reset >= retry_after
