"""Tests for ringwall.demo.backend through real sockets against a thread-hosted backend."""

import argparse
import asyncio
import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets.sync.client

from ringwall.demo import api
from ringwall.demo.api import DemoApi
from ringwall.demo.backend import DemoBackend, ReceivedRequest, _parse_listen_address
from tests.support.backend_thread import running_backend
from tests.support.waiting import wait_for

TIMEOUT = 5.0


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    with running_backend() as started:
        yield started


def fetch(
    backend: DemoBackend,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=TIMEOUT)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def fetch_json(backend: DemoBackend, method: str, target: str, body: bytes | None = None) -> Any:
    response, data = fetch(backend, method, target, body)
    assert response.status == 200, data
    assert response.getheader("Content-Type") == "application/json"
    return json.loads(data)


def open_socket(backend: DemoBackend) -> socket.socket:
    return socket.create_connection(("127.0.0.1", backend.port), timeout=TIMEOUT)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_head(sock: socket.socket) -> bytes:
    """Read one response head byte by byte, so nothing after it is consumed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed after {head!r}"
        head += byte
    return head


def test_health_returns_ok(backend: DemoBackend) -> None:
    assert fetch_json(backend, "GET", "/health") == {"status": "ok"}


def test_products_list_and_item(backend: DemoBackend) -> None:
    products = fetch_json(backend, "GET", "/api/products")["products"]
    ids = [product["id"] for product in products]
    assert ids == ["p-100", "p-200", "p-300"]

    product = fetch_json(backend, "GET", "/api/products/p-200")
    assert product["name"] == "High-Yield Savings"


def test_unknown_product_is_404(backend: DemoBackend) -> None:
    response, data = fetch(backend, "GET", "/api/products/p-999")
    assert response.status == 404
    assert json.loads(data)["error"] == "not_found"


@pytest.mark.parametrize("target", ["/api/products", "/api/products/p-100"])
def test_products_etag_gives_304(backend: DemoBackend, target: str) -> None:
    response, _ = fetch(backend, "GET", target)
    etag = response.getheader("ETag")
    assert etag is not None
    assert etag.startswith('"')

    for condition in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response, data = fetch(backend, "GET", target, headers={"If-None-Match": condition})
        assert response.status == 304, condition
        assert data == b""
        assert response.getheader("ETag") == etag
        assert response.getheader("Content-Length") is None

    response, data = fetch(backend, "GET", target, headers={"If-None-Match": '"other"'})
    assert response.status == 200
    assert data


def test_orders_create_get_delete(backend: DemoBackend) -> None:
    listed = fetch_json(backend, "GET", "/api/orders")["orders"]
    assert [order["id"] for order in listed] == ["ord-5001", "ord-5002"]

    payload = {"account_id": "acc-1001", "symbol": "ACME", "side": "buy", "quantity": 3}
    response, data = fetch(backend, "POST", "/api/orders", json.dumps(payload).encode())
    assert response.status == 201
    created = json.loads(data)
    assert created == {**payload, "id": "ord-5003", "status": "pending"}
    assert response.getheader("Location") == "/api/orders/ord-5003"

    assert fetch_json(backend, "GET", "/api/orders/ord-5003") == created

    response, data = fetch(backend, "DELETE", "/api/orders/ord-5003")
    assert response.status == 204
    assert data == b""
    assert response.getheader("Content-Length") is None

    response, _ = fetch(backend, "GET", "/api/orders/ord-5003")
    assert response.status == 404


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff"])
def test_order_with_invalid_body_is_400(backend: DemoBackend, body: bytes) -> None:
    response, data = fetch(backend, "POST", "/api/orders", body)
    assert response.status == 400
    assert json.loads(data)["error"] == "bad_request"


def test_order_ignores_client_id_and_status(backend: DemoBackend) -> None:
    body = json.dumps({"id": "ord-1", "status": "filled", "symbol": "X"}).encode()
    response, data = fetch(backend, "POST", "/api/orders", body)
    assert response.status == 201
    assert json.loads(data) == {"id": "ord-5003", "symbol": "X", "status": "pending"}


def test_accounts_and_transactions(backend: DemoBackend) -> None:
    for account_id in ("acc-1001", "acc-2002"):
        assert fetch_json(backend, "GET", f"/api/accounts/{account_id}")["id"] == account_id
        history = fetch_json(backend, "GET", f"/api/accounts/{account_id}/transactions")
        assert history["account_id"] == account_id
        assert history["transactions"]

    for target in ("/api/accounts/acc-9999", "/api/accounts/acc-9999/transactions"):
        response, _ = fetch(backend, "GET", target)
        assert response.status == 404, target


def test_admin_endpoints(backend: DemoBackend) -> None:
    users = fetch_json(backend, "GET", "/api/admin/users")["users"]
    assert {user["role"] for user in users} == {"admin", "support"}
    events = fetch_json(backend, "GET", "/api/admin/audit")["events"]
    assert events[0]["action"] == "user.role_changed"


def test_routes_match_decoded_path(backend: DemoBackend) -> None:
    assert "users" in fetch_json(backend, "GET", "/api/%61dmin/users")


def test_unknown_path_is_404_json(backend: DemoBackend) -> None:
    response, data = fetch(backend, "GET", "/nothing/here")
    assert response.status == 404
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(data) == {"error": "not_found", "message": "no resource at /nothing/here"}


def test_wrong_method_is_405_with_allow(backend: DemoBackend) -> None:
    response, _ = fetch(backend, "PUT", "/api/products")
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD"

    response, _ = fetch(backend, "PATCH", "/api/orders/ord-5001")
    assert response.getheader("Allow") == "DELETE, GET, HEAD"


def test_echo_reports_request(backend: DemoBackend) -> None:
    body = b'{"hello": "world"}'
    headers = {"X-First": "1", "x-second": "two"}
    response, data = fetch(backend, "PUT", "/api/echo/a/%2e%2e/b?x=1&y=%20", body, headers)
    assert response.status == 200
    echo = json.loads(data)
    assert echo["method"] == "PUT"
    assert echo["path"] == "/api/echo/a/%2e%2e/b"
    assert echo["query"] == "x=1&y=%20"
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    names = [name for name, _ in echo["headers"]]
    assert names.index("X-First") < names.index("x-second")
    assert ["x-second", "two"] in echo["headers"]


def test_received_records_full_request(backend: DemoBackend) -> None:
    fetch(backend, "POST", "/api/echo?q=1", b"payload", {"X-Trace": "abc"})
    assert len(backend.received) == 1
    received = backend.received[0]
    assert received.method == "POST"
    assert received.target == "/api/echo?q=1"
    assert received.body == b"payload"
    assert received.header("x-trace") == "abc"
    assert ("X-Trace", "abc") in received.headers


def test_echo_reads_chunked_body(backend: DemoBackend) -> None:
    parts = [b"first-", b"second-", b"third"]
    connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=TIMEOUT)
    try:
        connection.request("POST", "/api/echo", body=iter(parts), encode_chunked=True)
        response = connection.getresponse()
        echo = json.loads(response.read())
    finally:
        connection.close()

    body = b"".join(parts)
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert ["Transfer-Encoding", "chunked"] in echo["headers"]
    assert backend.received[0].body == body


def test_expect_100_continue(backend: DemoBackend) -> None:
    with open_socket(backend) as sock:
        sock.sendall(
            b"POST /api/echo HTTP/1.1\r\nHost: demo\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = read_head(sock)
        assert interim.startswith(b"HTTP/1.1 100 ")

        sock.sendall(b"hello")
        response = http.client.HTTPResponse(sock)
        response.begin()
        echo = json.loads(response.read())

    assert response.status == 200
    assert echo["body_length"] == 5


def test_declared_body_over_limit_is_413() -> None:
    with running_backend(max_body_size=1024) as backend, open_socket(backend) as sock:
        sock.sendall(
            b"POST /api/echo HTTP/1.1\r\nHost: demo\r\nContent-Length: 1025\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        reply = read_until_closed(sock)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in reply
        assert backend.received == []


def test_chunked_body_over_limit_is_413() -> None:
    with running_backend(max_body_size=1024) as backend, open_socket(backend) as sock:
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        sock.sendall(
            b"POST /api/echo HTTP/1.1\r\nHost: demo\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 2
            + b"0\r\n\r\n"
        )
        reply = read_until_closed(sock)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert backend.received == []


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"POST /api/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_invalid_request_is_400_and_close(backend: DemoBackend, raw: bytes) -> None:
    with open_socket(backend) as sock:
        sock.sendall(raw)
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in reply
    assert backend.received == []
    assert backend.connection_count == 1


def test_head_returns_get_headers_without_body(backend: DemoBackend) -> None:
    get_response, get_body = fetch(backend, "GET", "/api/products")

    connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=TIMEOUT)
    try:
        connection.request("HEAD", "/api/products")
        head_response = connection.getresponse()
        head_body = head_response.read()
        connection.request("GET", "/health")
        after = connection.getresponse()
        after_body = after.read()
    finally:
        connection.close()

    assert head_response.status == 200
    assert head_body == b""
    assert head_response.getheader("Content-Length") == str(len(get_body))
    assert head_response.getheader("ETag") == get_response.getheader("ETag")
    assert json.loads(after_body) == {"status": "ok"}


def test_head_on_stream_sends_no_body(backend: DemoBackend) -> None:
    with open_socket(backend) as sock:
        sock.sendall(b"HEAD /api/stream?chunks=2 HTTP/1.1\r\nHost: demo\r\n\r\n")
        head = read_head(sock)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        rest = read_until_closed(sock)
    assert b"Transfer-Encoding: chunked" in head
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b'{"status":"ok"}')


def test_keep_alive_serves_two_requests(backend: DemoBackend) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=TIMEOUT)
    try:
        for target in ("/health", "/api/products/p-100"):
            connection.request("GET", target)
            response = connection.getresponse()
            response.read()
            assert response.status == 200, target
    finally:
        connection.close()
    assert backend.connection_count == 1
    assert [request.target for request in backend.received] == ["/health", "/api/products/p-100"]


def test_pipelined_requests_answered_in_order(backend: DemoBackend) -> None:
    with open_socket(backend) as sock:
        sock.sendall(
            b"GET /api/products/p-100 HTTP/1.1\r\nHost: demo\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
        )
        reply = read_until_closed(sock)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert reply.index(b"Everyday Checking") < reply.index(b'{"status":"ok"}')


def test_stream_sends_chunked_lines(backend: DemoBackend) -> None:
    with open_socket(backend) as sock:
        sock.sendall(
            b"GET /api/stream?chunks=4 HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
        )
        reply = read_until_closed(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert b"Content-Length" not in head
    assert body.endswith(b"0\r\n\r\n")

    _, data = fetch(backend, "GET", "/api/stream?chunks=4")
    lines = [json.loads(line) for line in data.splitlines()]
    assert lines == [{"chunk": index, "of": 4} for index in range(1, 5)]


def test_stream_flushes_each_chunk(backend: DemoBackend) -> None:
    with open_socket(backend) as sock:
        sock.sendall(b"GET /api/stream?chunks=2&interval=1 HTTP/1.1\r\nHost: demo\r\n\r\n")
        read_head(sock)
        first = sock.recv(65536)
    assert b'{"chunk":1,"of":2}' in first
    assert b'"chunk":2' not in first


@pytest.mark.parametrize("query", ["chunks=x", "chunks=-1", "chunks=1001", "interval=nan"])
def test_stream_rejects_invalid_query(backend: DemoBackend, query: str) -> None:
    response, _ = fetch(backend, "GET", f"/api/stream?{query}")
    assert response.status == 400


def test_slow_waits_for_delay(backend: DemoBackend) -> None:
    started = time.monotonic()
    assert fetch_json(backend, "GET", "/api/slow?delay=0.3") == {"delay": 0.3}
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("query", ["delay=abc", "delay=-1", "delay=inf"])
def test_slow_rejects_invalid_delay(backend: DemoBackend, query: str) -> None:
    response, _ = fetch(backend, "GET", f"/api/slow?{query}")
    assert response.status == 400


def test_slow_caps_delay_at_30_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []

    async def record_sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(asyncio, "sleep", record_sleep)
    request = ReceivedRequest("GET", "/api/slow?delay=100", (), b"")
    reply = asyncio.run(DemoApi().handle(request))
    assert delays == [30.0]
    assert isinstance(reply, api.Reply)
    assert json.loads(reply.body) == {"delay": 30.0}


def test_websocket_echo(backend: DemoBackend) -> None:
    url = f"ws://127.0.0.1:{backend.port}/api/ws"
    with websockets.sync.client.connect(url, proxy=None, open_timeout=TIMEOUT) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=TIMEOUT) == "hello"

        websocket.send(b"\x00\x01\xff")
        assert websocket.recv(timeout=TIMEOUT) == b"\x00\x01\xff"

        large = "x" * 70_000
        websocket.send(large)
        assert websocket.recv(timeout=TIMEOUT) == large

        websocket.send(["frag", "mented"])
        assert websocket.recv(timeout=TIMEOUT) == "fragmented"

        pong = websocket.ping(b"ping-data")
        assert pong.wait(TIMEOUT)
    assert websocket.close_code == 1000
    assert backend.received[0].header("upgrade") == "websocket"


def test_websocket_without_upgrade_is_426(backend: DemoBackend) -> None:
    response, data = fetch(backend, "GET", "/api/ws")
    assert response.status == 426
    assert response.getheader("Upgrade") == "websocket"
    assert json.loads(data)["error"] == "upgrade_required"


def test_websocket_with_bad_key_is_400(backend: DemoBackend) -> None:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "short",
    }
    response, _ = fetch(backend, "GET", "/api/ws", headers=headers)
    assert response.status == 400


def test_stop_closes_open_connections() -> None:
    with running_backend() as backend:
        idle = open_socket(backend)
        busy = open_socket(backend)
        busy.sendall(b"GET /api/slow?delay=30 HTTP/1.1\r\nHost: demo\r\n\r\n")
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: demo\r\n\r\n")
        read_head(idle)
        assert wait_for(lambda: len(backend.received) == 2)
        started = time.monotonic()
    try:
        assert time.monotonic() - started < TIMEOUT
        idle.recv(65536)
        assert idle.recv(65536) == b""
        assert busy.recv(65536) == b""
    finally:
        idle.close()
        busy.close()


def test_parse_listen_address() -> None:
    assert _parse_listen_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert _parse_listen_address("[::1]:8080") == ("::1", 8080)
    for invalid in ("9000", "host:", "host:port", "host:70000", ":9000", "host:\u00b2"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected HOST:PORT"):
            _parse_listen_address(invalid)
