"""The conformance checker that the schemathesis test relies on, against the demo document."""

import pytest

from ringwall.demo.api import ReceivedRequest, openapi_document
from tests.support.openapi_conformance import SpecConformance

CHECKER = SpecConformance(openapi_document())
JSON = (("Content-Type", "application/json"),)


def violations(
    method: str, target: str, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
) -> list[str]:
    return CHECKER.violations(ReceivedRequest(method, target, headers, body))


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/health"),
        ("GET", "/api/products"),
        ("GET", "/api/products/p-100"),
        ("GET", "/api/products/p-%31%30"),
        ("GET", "/api/orders/ord-5001"),
        ("DELETE", "/api/orders/ord-5001"),
        ("GET", "/api/accounts/acc-1001/transactions"),
        ("GET", "/api/stream?chunks=1000&interval=0.5"),
        ("GET", "/api/stream?interval=2e-3"),
        ("GET", "/api/slow?delay=0"),
        ("GET", "/api/stream?undeclared=1"),
    ],
)
def test_conforming_request(method: str, target: str) -> None:
    assert violations(method, target) == []


def test_conforming_order() -> None:
    assert violations("POST", "/api/orders", JSON, b'{"product_id": 42, "quantity": 2}') == []


def test_echo_any_media_type() -> None:
    headers = (("Content-Type", "application/octet-stream"),)
    assert violations("PUT", "/api/echo", headers, b"\x00\xff") == []


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("GET", "/api/products/x-1", "path parameter product_id='x-1'"),
        ("GET", "/api/products/p-1%2F2", "path parameter product_id='p-1/2'"),
        ("GET", "/api/orders/ord-1234567890", "path parameter order_id"),
        ("GET", "/api/accounts/acc-10011", "path parameter account_id"),
        ("GET", "/api/stream?chunks=1001", "query parameter chunks='1001'"),
        ("GET", "/api/stream?chunks=-1", "query parameter chunks='-1'"),
        ("GET", "/api/stream?chunks=1.5", "is not an integer"),
        ("GET", "/api/stream?chunks=1&chunks=2", "sent 2 times"),
        ("GET", "/api/stream?interval=-0.5", "query parameter interval='-0.5'"),
        ("GET", "/api/slow?delay=abc", "is not a number"),
        ("GET", "/api/slow?delay=", "is not a number"),
        ("DELETE", "/api/orders", "no operation for DELETE"),
        ("PUT", "/api/admin/users", "no operation for PUT"),
        ("OPTIONS", "/api/echo", "no operation for OPTIONS"),
        ("GET", "/api/%ff", "not UTF-8"),
    ],
)
def test_violating_request(method: str, target: str, expected: str) -> None:
    problems = violations(method, target)
    assert len(problems) == 1
    assert expected in problems[0]


def test_header_over_max_length() -> None:
    problems = violations("GET", "/api/products", (("If-None-Match", "x" * 257),))
    assert len(problems) == 1
    assert "header parameter If-None-Match" in problems[0]


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (JSON, b'{"product_id": "42", "quantity": 2}', "body at ['product_id']"),
        (JSON, b'{"product_id": 42, "quantity": 101}', "body at ['quantity']"),
        (JSON, b'{"product_id": 42, "quantity": 2, "x": 1}', "body at []"),
        (JSON, b'{"product_id": NaN, "quantity": 2}', "not JSON"),
        (JSON, b'{"product_id": 1, "quantity": 2, "quantity": -1}', "appear more than once"),
        (JSON, b"{", "not JSON"),
        (JSON, b"", "required body is missing"),
        ((("Content-Type", "text/plain"),), b"{}", "media type 'text/plain'"),
        ((), b"{}", "without Content-Type"),
    ],
)
def test_violating_order(headers: tuple[tuple[str, str], ...], body: bytes, expected: str) -> None:
    problems = violations("POST", "/api/orders", headers, body)
    assert len(problems) == 1
    assert expected in problems[0]


def test_body_without_request_body() -> None:
    problems = violations("GET", "/api/echo", JSON, b"{}")
    assert problems == ["GET /api/echo: a body of 2 bytes, but the operation declares none"]
