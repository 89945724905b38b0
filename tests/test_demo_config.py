"""The bundled demo configuration, in front of the demo backend."""

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwall.config import load_config
from ringwall.demo.backend import DemoBackend
from ringwall.demo.runner import DEMO_CONFIG
from tests.support.backend_thread import running_backend
from tests.support.client import RawClient, request
from tests.support.gateway_thread import GatewayThread, running_gateway

TWO_MB = 2 * 1000 * 1000


def requests_except_health(backend: DemoBackend) -> list[str]:
    """Return the targets the backend received, without the gateway's health probes."""
    return [received.target for received in backend.received if received.target != "/health"]


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    with running_backend() as server:
        yield server


@pytest.fixture
def gateway(backend: DemoBackend, tmp_path: Path) -> Iterator[GatewayThread]:
    config = load_config(
        DEMO_CONFIG, {**os.environ, "DEMO_BACKEND_URL": f"http://127.0.0.1:{backend.port}"}
    )
    with running_gateway(config, tmp_path) as server:
        yield server


def test_products_served(gateway: GatewayThread) -> None:
    response = request(gateway.port, b"GET /api/products HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 200
    assert response.header("X-Request-Id")
    assert "products" in response.json()


def test_unknown_path_problem(gateway: GatewayThread, backend: DemoBackend) -> None:
    response = request(gateway.port, b"GET /api/nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert response.status == 404
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json()["layer"] == "routing"
    assert requests_except_health(backend) == []


def test_account_template_route(gateway: GatewayThread) -> None:
    response = request(
        gateway.port, b"GET /api/accounts/acc-1001/transactions HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    assert response.status == 200
    assert gateway.access_records()[-1]["route"] == "account-transactions"


def test_large_order_with_length(gateway: GatewayThread, backend: DemoBackend) -> None:
    with RawClient(gateway.port) as client:
        client.send(
            b"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % TWO_MB
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.send(b"{" * TWO_MB)
        response = client.response(b"POST")
    assert response.status == 413
    assert gateway.access_records()[-1]["upstream"] is None
    assert requests_except_health(backend) == []


def test_large_order_chunked(gateway: GatewayThread, backend: DemoBackend) -> None:
    with RawClient(gateway.port) as client:
        client.send(
            b"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%b\r\n" % (100_000, b"{" * 100_000)
        try:
            for _ in range(TWO_MB // 100_000):
                client.send(chunk)
            client.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = client.response(b"POST")
    assert response.status == 413
    time.sleep(0.1)
    assert gateway.access_records()[-1]["upstream"] is None
    assert requests_except_health(backend) == []


def test_content_length_and_chunked(gateway: GatewayThread, backend: DemoBackend) -> None:
    response = request(
        gateway.port,
        b"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert response.status == 400
    assert requests_except_health(backend) == []


def test_forged_forwarded_for_replaced(gateway: GatewayThread) -> None:
    response = request(
        gateway.port,
        b"GET /api/echo HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
    )
    values = [
        value for name, value in response.json()["headers"] if name.lower() == "x-forwarded-for"
    ]
    assert values == ["127.0.0.1"]
    assert "203.0.113.9" not in response.body.decode()
