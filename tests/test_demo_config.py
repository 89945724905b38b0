"""The bundled demo configuration, in front of the demo backend."""

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ringwall.demo.backend import DemoBackend
from ringwall.demo.issuer import DemoIssuer
from tests.support.client import RawClient, Response, request
from tests.support.demo_gateway import Demo, running_demo
from tests.support.gateway_thread import GatewayThread
from tests.support.tokens import b64, hs256_token

TWO_MB = 2 * 1000 * 1000


def requests_except_health(backend: DemoBackend) -> list[str]:
    """Return the targets the backend received, without the gateway's health probes."""
    return [received.target for received in backend.received if received.target != "/health"]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    with running_demo(tmp_path) as running:
        yield running


@pytest.fixture
def backend(demo: Demo) -> DemoBackend:
    return demo.backend


@pytest.fixture
def issuer(demo: Demo) -> DemoIssuer:
    return demo.issuer


@pytest.fixture
def gateway(demo: Demo) -> GatewayThread:
    return demo.gateway


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


def test_account_template_route(gateway: GatewayThread, issuer: DemoIssuer) -> None:
    token = issuer.mint("alice", accounts=("acc-1001",)).encode()
    response = request(
        gateway.port,
        b"GET /api/accounts/acc-1001/transactions HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Bearer %b\r\n\r\n" % token,
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


def test_large_order_chunked(
    gateway: GatewayThread, backend: DemoBackend, issuer: DemoIssuer
) -> None:
    token = issuer.mint("alice", roles=("customer",)).encode()
    with RawClient(gateway.port) as client:
        client.send(
            b"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer %b\r\n\r\n" % token
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


def get(gateway: GatewayThread, path: str, token: str | None = None) -> Response:
    auth = b"Authorization: Bearer %b\r\n" % token.encode() if token else b""
    return request(
        gateway.port, b"GET %b HTTP/1.1\r\nHost: localhost\r\n%b\r\n" % (path.encode(), auth)
    )


def test_demo_policy(gateway: GatewayThread, issuer: DemoIssuer) -> None:
    customer = issuer.mint("alice", roles=("customer",), accounts=("acc-1001",))
    assert get(gateway, "/api/orders").status == 401
    assert get(gateway, "/api/orders", issuer.mint("alice", ttl=-120)).status == 401
    assert get(gateway, "/api/orders", issuer.mint("alice", audience="other")).status == 401
    assert get(gateway, "/api/admin/users", customer).status == 403
    assert get(gateway, "/api/accounts/acc-2002", customer).status == 403
    assert get(gateway, "/api/accounts/acc-1001", customer).status == 200
    assert get(gateway, "/api/admin/users", issuer.mint("root", roles=("admin",))).status == 200


def test_demo_rejects_forged_algorithms(gateway: GatewayThread, issuer: DemoIssuer) -> None:
    header = b64(json.dumps({"alg": "none", "kid": issuer.kid}).encode())
    claims = json.loads(base64.urlsafe_b64decode(issuer.mint("alice").split(".")[1] + "=="))
    payload = b64(json.dumps(claims).encode())
    assert get(gateway, "/api/orders", f"{header}.{payload}.").status == 401
    public_pem = issuer.public_keys()[0].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = hs256_token(public_pem.decode(), header={"kid": issuer.kid}, **claims)
    assert get(gateway, "/api/orders", forged).status == 401


def test_demo_echo_identity(gateway: GatewayThread, issuer: DemoIssuer) -> None:
    token = issuer.mint("alice", roles=("customer",)).encode()
    response = request(
        gateway.port,
        b"GET /api/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %b\r\n"
        b"X-Ringwall-Subject: root\r\nX-Ringwall-Roles: admin\r\n\r\n" % token,
    )
    headers = [(name.lower(), value) for name, value in response.json()["headers"]]
    assert [v for n, v in headers if n == "x-ringwall-subject"] == ["alice"]
    assert [v for n, v in headers if n == "x-ringwall-roles"] == ["customer"]


def test_demo_signs_upstream_token(gateway: GatewayThread, issuer: DemoIssuer) -> None:
    token = issuer.mint("alice", roles=("customer",))
    response = get(gateway, "/api/echo", token)
    headers = {name.lower(): value for name, value in response.json()["headers"]}
    assert headers["x-ringwall-token"].count(".") == 2
    jwks = get(gateway, "/.well-known/ringwall/jwks.json")
    assert jwks.status == 200
    assert jwks.json()["keys"][0]["alg"] == "ES256"


def test_demo_products_limit_per_ip(gateway: GatewayThread) -> None:
    # The sliding-window counter weighs the previous fixed window (counted from
    # the epoch) less as time passes, so requests that straddle a minute
    # boundary leave room again within a second. Start in a fresh minute.
    left_in_minute = 60 - time.time() % 60
    if left_in_minute < 5:
        time.sleep(left_in_minute + 0.1)
    statuses = [get(gateway, "/api/products").status for _ in range(100)]
    assert statuses == [200] * 100
    refused = get(gateway, "/api/products")
    assert refused.status == 429
    assert refused.header("Retry-After") is not None
    assert int(refused.header("Retry-After") or "0") >= 1
    assert refused.header("RateLimit-Policy") == '"per-ip";q=100;w=60'
    assert (refused.header("RateLimit") or "").startswith('"per-ip";r=0;t=')
    assert refused.header("Content-Type") == "application/problem+json"
    # Unlike a rate (GCRA), the window does not give back one request every
    # 0.6 s: within the same fixed window the client stays refused.
    time.sleep(0.7)
    assert get(gateway, "/api/products").status == 429


def test_demo_bans_repeated_401(gateway: GatewayThread) -> None:
    for _ in range(21):
        assert get(gateway, "/api/orders").status == 401
    refused = get(gateway, "/api/products")
    assert refused.status == 403
    assert refused.json()["layer"] == "ban"


def post_order(gateway: GatewayThread, token: str, body: bytes, content_type: bytes) -> Response:
    return request(
        gateway.port,
        b"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %b\r\n"
        b"Content-Type: %b\r\nContent-Length: %d\r\n\r\n%b"
        % (token.encode(), content_type, len(body), body),
        b"POST",
    )


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (b'{"product_id": "42", "quantity": 2}', b"application/json", 400, "/product_id"),
        (
            b'{"product_id": 42, "quantity": 2, "quantity": -1}',
            b"application/json",
            400,
            "duplicate",
        ),
        (b"[" * 10_000 + b"]" * 10_000, b"application/json", 400, "nest"),
        (b'{"product_id": 42, "quantity": 2}', b"text/plain", 415, "text/plain"),
        (
            b'{"product_id": 42, "quantity": 2}',
            b"application/json; charset=latin-1",
            415,
            "charset",
        ),
    ],
)
def test_demo_order_validation(
    gateway: GatewayThread,
    backend: DemoBackend,
    issuer: DemoIssuer,
    body: bytes,
    content_type: bytes,
    status: int,
    detail: str,
) -> None:
    customer = issuer.mint("alice", roles=("customer",))
    response = post_order(gateway, customer, body, content_type)
    assert response.status == status
    if detail == "nest":
        # The WAF's JSON parser, which runs first, refuses the depth too.
        assert response.json()["layer"] in ("waf", "validation")
    else:
        assert response.json()["layer"] == "validation"
        assert detail in response.json()["detail"]
    assert requests_except_health(backend) == []


def test_demo_valid_order_forwarded_byte_for_byte(
    gateway: GatewayThread, backend: DemoBackend, issuer: DemoIssuer
) -> None:
    customer = issuer.mint("alice", roles=("customer",))
    body = b'{ "product_id" : 42,\n  "quantity": 2 }'
    response = post_order(gateway, customer, body, b"application/json")
    assert response.status in (200, 201)
    received = [r for r in backend.received if r.target == "/api/orders"]
    assert received[-1].body == body


def test_demo_waf_blocks_attacks(gateway: GatewayThread, issuer: DemoIssuer) -> None:
    attack = get(gateway, "/api/products?id=1%27%20OR%201=1--")
    assert attack.status == 403
    assert attack.json()["layer"] == "waf"
    customer = issuer.mint("alice", roles=("customer",))
    union = post_order(
        gateway,
        customer,
        b'{"product_id": 42, "quantity": 2, "note": "1 UNION SELECT password FROM users"}',
        b"application/json",
    )
    assert union.status == 403
    normal = post_order(
        gateway, customer, b'{"product_id": 42, "quantity": 2}', b"application/json"
    )
    assert normal.status in (200, 201)
    records = [
        json.loads(line)
        for line in (Path(issuer.state_dir) / "security.log").read_text().splitlines()
    ]
    rule_ids = {str(rule["id"]) for record in records for rule in record["rules"]}
    assert {"942100", "949110"} <= rule_ids


def send(
    gateway: GatewayThread,
    method: str,
    target: str,
    token: str | None = None,
    extra: bytes = b"",
    body: bytes = b"",
) -> Response:
    auth = b"Authorization: Bearer %b\r\n" % token.encode() if token else b""
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    return request(
        gateway.port,
        b"%b %b HTTP/1.1\r\nHost: localhost\r\n%b%b%b\r\n%b"
        % (method.encode(), target.encode(), auth, length, extra, body),
        method.encode(),
    )


@pytest.mark.parametrize(
    ("method", "target", "role", "extra", "status"),
    [
        ("GET", "/api/products", None, b"If-None-Match: " + b"x" * 257 + b"\r\n", 400),
        ("GET", "/api/products?page=2", None, b"", 400),
        ("GET", "/api/products/null,null", None, b"", 400),
        ("GET", "/api/orders/null,null", "customer", b"", 400),
        ("DELETE", "/api/orders", "customer", b"", 405),
        ("PUT", "/api/admin/users", "admin", b"", 405),
        ("POST", "/api/admin/users", "admin", b"", 405),
        ("PATCH", "/api/admin/audit", "admin", b"", 405),
        ("DELETE", "/api/admin/audit", "admin", b"", 405),
        ("OPTIONS", "/api/echo", None, b"", 405),
        ("GET", "/api/echo/more", None, b"", 404),
        ("GET", "/api/stream?interval=-1", None, b"", 400),
        ("GET", "/api/stream?chunks=1001", None, b"", 400),
        ("GET", "/api/slow?delay=-1", None, b"", 400),
        ("GET", "/api/slow?delay=1&debug=1", None, b"", 400),
    ],
)
def test_demo_rejects_undeclared_requests(
    gateway: GatewayThread,
    backend: DemoBackend,
    issuer: DemoIssuer,
    method: str,
    target: str,
    role: str | None,
    extra: bytes,
    status: int,
) -> None:
    token = issuer.mint("alice", roles=(role,)) if role else None
    response = send(gateway, method, target, token, extra)
    assert response.status == status
    assert requests_except_health(backend) == []


def test_demo_order_with_largest_product_id(
    gateway: GatewayThread, backend: DemoBackend, issuer: DemoIssuer
) -> None:
    customer = issuer.mint("alice", roles=("customer",))
    body = b'{"product_id": 2147483647, "quantity": 1}'
    response = post_order(gateway, customer, body, b"application/json")
    assert response.status == 201
    assert [r.body for r in backend.received if r.target == "/api/orders"] == [body]


def test_demo_waf_inspects_other_order_members(
    gateway: GatewayThread, backend: DemoBackend, issuer: DemoIssuer
) -> None:
    # The 942220 exclusion covers product_id only, so the rule still inspects quantity.
    customer = issuer.mint("alice", roles=("customer",))
    body = b'{"product_id": 1, "quantity": 2147483647}'
    response = post_order(gateway, customer, body, b"application/json")
    assert response.status == 403
    assert response.json()["layer"] == "waf"
    assert requests_except_health(backend) == []


@pytest.mark.parametrize(
    ("method", "target"), [("DELETE", "/api/orders/ord-5001"), ("GET", "/health")]
)
def test_demo_rejects_undeclared_body(
    gateway: GatewayThread, backend: DemoBackend, issuer: DemoIssuer, method: str, target: str
) -> None:
    customer = issuer.mint("alice", roles=("customer",))
    extra = b"Content-Type: application/json\r\n"
    response = send(gateway, method, target, customer, extra, body=b'{"a": 1}')
    assert response.status == 413
    assert requests_except_health(backend) == []


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/octet-stream"])
def test_demo_echo_accepts_any_media_type(gateway: GatewayThread, content_type: bytes) -> None:
    response = send(
        gateway, "POST", "/api/echo", extra=b"Content-Type: %b\r\n" % content_type, body=b"hello"
    )
    assert response.status == 200
    assert response.json()["body_length"] == 5
