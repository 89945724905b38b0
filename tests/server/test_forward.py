"""Proxying behaviour through a real gateway to real upstreams on loopback."""

import contextlib
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ringwall.demo.backend import DemoBackend
from tests.support.backend_thread import running_backend
from tests.support.client import RawClient, request
from tests.support.gateway_thread import GatewayThread, proxy_config, running_gateway
from tests.support.raw_upstream import RawUpstream


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    with running_backend() as server:
        yield server


@pytest.fixture
def demo_gateway(backend: DemoBackend, tmp_path: Path) -> Iterator[GatewayThread]:
    config = proxy_config(
        backend.port,
        server="  timeouts: {drain: 2s}\n  limits: {max_body_bytes: 16MiB}",
        route_extra="    upgrades: [websocket]",
    )
    with running_gateway(config, tmp_path) as gateway:
        yield gateway


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def echo(gateway: GatewayThread, raw: bytes) -> dict[str, object]:
    response = request(gateway.port, raw)
    assert response.status == 200
    document = response.json()
    assert isinstance(document, dict)
    return document


def received_headers(document: dict[str, object]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    raw = document["headers"]
    assert isinstance(raw, list)
    for name, value in raw:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def test_request_id_sent_both_ways(demo_gateway: GatewayThread) -> None:
    response = request(demo_gateway.port, b"GET /api/echo HTTP/1.1\r\nHost: api\r\n\r\n")
    request_id = response.header("X-Request-Id")
    assert request_id
    assert received_headers(response.json())["x-request-id"] == [request_id]


def test_client_forwarding_headers_replaced(demo_gateway: GatewayThread) -> None:
    document = echo(
        demo_gateway,
        b"GET /api/echo HTTP/1.1\r\nHost: api\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\n"
        b"Forwarded: for=203.0.113.9\r\n"
        b"X-Real-IP: 203.0.113.9\r\nX-Request-Id: forged\r\nX-Forwarded-Proto: https\r\n"
        b"X-Ringwall-Subject: admin\r\n\r\n",
    )
    headers = received_headers(document)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert "forwarded" not in headers
    assert "x-ringwall-subject" not in headers
    assert headers["x-request-id"] != ["forged"]


@pytest.mark.parametrize("name", [b"X_Forwarded_For", b"x.forwarded.for", b"X_Custom"])
def test_header_name_variants_rejected(demo_gateway: GatewayThread, name: bytes) -> None:
    response = request(
        demo_gateway.port, b"GET /api/echo HTTP/1.1\r\nHost: api\r\n%b: 1\r\n\r\n" % name
    )
    assert response.status == 400
    assert response.json()["layer"] == "protocol"


def test_repeated_content_type_rejected(demo_gateway: GatewayThread) -> None:
    response = request(
        demo_gateway.port,
        b"POST /api/echo HTTP/1.1\r\nHost: api\r\nContent-Type: a/b\r\n"
        b"Content-Type: c/d\r\nContent-Length: 0\r\n\r\n",
        b"POST",
    )
    assert response.status == 400


def test_hop_by_hop_headers_removed(demo_gateway: GatewayThread) -> None:
    document = echo(
        demo_gateway,
        b"GET /api/echo HTTP/1.1\r\nHost: api\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\n"
        b"Trailer: X\r\nX-Kept: yes\r\n\r\n",
    )
    headers = received_headers(document)
    for name in ("x-secret", "keep-alive", "te", "proxy-connection", "trailer"):
        assert name not in headers, name
    assert headers["x-kept"] == ["yes"]


def test_connection_cannot_remove_gateway_headers(demo_gateway: GatewayThread) -> None:
    document = echo(
        demo_gateway,
        b"GET /api/echo HTTP/1.1\r\nHost: api\r\n"
        b"Connection: X-Forwarded-For, X-Request-Id, X-Real-IP\r\n\r\n",
    )
    headers = received_headers(document)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert len(headers["x-request-id"]) == 1
    assert headers["x-real-ip"] == ["127.0.0.1"]


def test_trusted_proxy_client_address(backend: DemoBackend, tmp_path: Path) -> None:
    config = proxy_config(
        backend.port, server="  trusted_proxies: [127.0.0.0/8]\n  timeouts: {drain: 2s}"
    )
    with running_gateway(config, tmp_path) as gateway:
        document = echo(
            gateway,
            b"GET /api/echo HTTP/1.1\r\nHost: api\r\nX-Request-Id: edge-42\r\n"
            b"X-Forwarded-For: 198.51.100.7, 203.0.113.9\r\nX-Forwarded-For: 127.0.0.5\r\n\r\n",
        )
        records = gateway.access_records()
    headers = received_headers(document)
    assert headers["x-forwarded-for"] == ["203.0.113.9"]
    assert headers["x-request-id"] == ["edge-42"]
    assert records[-1]["client_ip"] == "203.0.113.9"


def test_path_and_query_forwarded(demo_gateway: GatewayThread) -> None:
    document = echo(
        demo_gateway, b"GET /api/%65cho/%7euser?q=%2F..&b=2 HTTP/1.1\r\nHost: api\r\n\r\n"
    )
    assert document["path"] == "/api/echo/~user"
    assert document["query"] == "q=%2F..&b=2"


def test_chunked_response_relayed(demo_gateway: GatewayThread) -> None:
    response = request(demo_gateway.port, b"GET /api/stream?chunks=5 HTTP/1.1\r\nHost: api\r\n\r\n")
    assert response.status == 200
    assert response.header("Transfer-Encoding") == "chunked"
    assert len(response.body.splitlines()) == 5


def test_chunked_response_to_http10_closes(demo_gateway: GatewayThread) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(b"GET /api/stream?chunks=3 HTTP/1.0\r\nHost: api\r\n\r\n")
        data = client.read_until_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert len(body.splitlines()) == 3


def test_head_response_has_no_body(demo_gateway: GatewayThread) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(b"HEAD /api/products HTTP/1.1\r\nHost: api\r\n\r\n")
        head = client.response(b"HEAD")
        client.send(b"GET /api/products HTTP/1.1\r\nHost: api\r\n\r\n")
        get = client.response()
    assert head.status == 200
    assert head.body == b""
    assert head.header("Content-Length") == get.header("Content-Length")
    assert get.body


def test_no_content_and_not_modified(demo_gateway: GatewayThread) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(b"GET /api/products/p-100 HTTP/1.1\r\nHost: api\r\n\r\n")
        first = client.response()
        etag = first.header("ETag")
        assert etag
        client.send(
            b"GET /api/products/p-100 HTTP/1.1\r\nHost: api\r\nIf-None-Match: %b\r\n\r\n"
            % etag.encode()
        )
        not_modified = client.response()
        client.send(b"POST /api/orders HTTP/1.1\r\nHost: api\r\nContent-Length: 2\r\n\r\n{}")
        order = client.response(b"POST").json()
        client.send(b"DELETE /api/orders/%b HTTP/1.1\r\nHost: api\r\n\r\n" % order["id"].encode())
        deleted = client.response(b"DELETE")
    assert not_modified.status == 304
    assert not_modified.body == b""
    assert deleted.status == 204
    assert deleted.body == b""
    assert deleted.header("Content-Length") is None


def test_expect_continue(demo_gateway: GatewayThread, backend: DemoBackend) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(
            b"POST /api/echo HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = client.sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        document = client.response(b"POST").json()
    assert document["body_length"] == 5
    assert "expect" not in received_headers(document)


def test_expect_continue_before_validation_reads(backend: DemoBackend, tmp_path: Path) -> None:
    # The validation layer reads the body before forwarding, so it must send
    # 100 Continue first, or the client waits for its own timeout.
    route_extra = """    validate:
      content_types: [application/json]
      json: {schema: {type: object}}"""
    config = proxy_config(backend.port, route_extra=route_extra)
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        client.send(
            b"POST /api/echo HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        client.sock.settimeout(1.0)
        interim = client.sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sock.settimeout(5.0)
        client.send(b"{}")
        document = client.response(b"POST").json()
    assert document["body_length"] == 2


def test_expect_continue_not_sent_for_rejected_head(backend: DemoBackend, tmp_path: Path) -> None:
    route_extra = """    validate:
      content_types: [application/json]
      json: {schema: {type: object}}"""
    config = proxy_config(backend.port, route_extra=route_extra)
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        client.send(
            b"POST /api/echo HTTP/1.1\r\nHost: api\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        client.sock.settimeout(5.0)
        first = client.sock.recv(100)
    assert first.startswith(b"HTTP/1.1 415 ")
    assert backend.received == []


def test_expect_continue_over_limit(backend: DemoBackend, tmp_path: Path) -> None:
    config = proxy_config(backend.port, server="  limits: {max_body_bytes: 10}")
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        client.send(
            b"POST /api/echo HTTP/1.1\r\nHost: api\r\nContent-Length: 50\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 413 ")
    assert backend.received == []


def test_unsupported_expectation(demo_gateway: GatewayThread) -> None:
    response = request(
        demo_gateway.port, b"GET /api/echo HTTP/1.1\r\nHost: api\r\nExpect: magic\r\n\r\n"
    )
    assert response.status == 417


def test_large_body_streams(demo_gateway: GatewayThread) -> None:
    body = bytes(range(256)) * 20_000  # 5 MB, above the whole-body buffer
    with RawClient(demo_gateway.port) as client:
        client.send(
            b"POST /api/echo HTTP/1.1\r\nHost: api\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        client.send(body)
        document = client.response(b"POST").json()
    assert document["body_length"] == len(body)
    assert document["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_large_chunked_body_streams(demo_gateway: GatewayThread) -> None:
    body = b"x" * 3_000_000
    chunks = b"".join(
        b"%x\r\n%b\r\n" % (len(part), part)
        for part in (body[i : i + 70_000] for i in range(0, len(body), 70_000))
    )
    with RawClient(demo_gateway.port) as client:
        client.send(b"POST /api/echo HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(chunks + b"0\r\n\r\n")
        document = client.response(b"POST").json()
    assert document["body_length"] == len(body)
    headers = received_headers(document)
    assert headers["transfer-encoding"] == ["chunked"]


def test_large_response_streams(demo_gateway: GatewayThread) -> None:
    response = request(
        demo_gateway.port, b"GET /api/stream?chunks=1000 HTTP/1.1\r\nHost: api\r\n\r\n"
    )
    assert len(response.body.splitlines()) == 1000


def test_websocket_tunnel(demo_gateway: GatewayThread) -> None:
    with connect(f"ws://127.0.0.1:{demo_gateway.port}/api/ws", proxy=None) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=5) == "hello"
        websocket.send(b"\x00\x01binary")
        assert websocket.recv(timeout=5) == b"\x00\x01binary"


def test_upgrade_refused_by_upstream(demo_gateway: GatewayThread) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(
            b"GET /api/products HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in data


def test_interim_response_forwarded(upstream: RawUpstream, gateway: GatewayThread) -> None:
    upstream.response = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    with RawClient(gateway.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        data = b""
        while not data.endswith(b"ok"):
            data += client.sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"HTTP/1.1 200 OK\r\n" in data


def test_unexpected_switching_protocols(upstream: RawUpstream, gateway: GatewayThread) -> None:
    upstream.response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
    )
    response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert response.status == 502


def test_invalid_upstream_response(upstream: RawUpstream, gateway: GatewayThread) -> None:
    upstream.response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"
    response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert response.status == 502
    assert response.json()["layer"] == "proxy"


def test_upstream_cut_mid_response(upstream: RawUpstream, gateway: GatewayThread) -> None:
    upstream.response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    upstream.close_after_response = True
    with RawClient(gateway.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"partial")


def test_body_until_close_relayed(upstream: RawUpstream, gateway: GatewayThread) -> None:
    upstream.response = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    upstream.close_after_response = True
    response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert response.status == 200
    assert response.body == b"until the end"


def test_stale_pooled_connection_retried(upstream: RawUpstream, gateway: GatewayThread) -> None:
    upstream.close_after_response = True  # closes without saying so in the response
    with RawClient(gateway.port) as client:
        for _ in range(3):
            client.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            assert client.response().status == 200
            time.sleep(0.05)
    assert len(upstream.requests) == 3


def test_upstream_refused_gets_502(tmp_path: Path) -> None:
    with running_gateway(proxy_config(closed_port()), tmp_path) as gateway:
        response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        records = gateway.access_records()
    assert response.status == 502
    assert response.json()["layer"] == "proxy"
    assert records[-1]["status"] == 502
    assert records[-1]["layer"] == "proxy"


def two_target_config(live_port: int, dead_port: int, balance: str = "round_robin") -> str:
    return f"""
server:
  timeouts: {{drain: 2s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{dead_port}", "http://127.0.0.1:{live_port}"]
    balance: {balance}
    passive_health: {{failures: 1, cooldown: 30s}}
routes:
  - path: /
    upstream: app
    auth: none
"""


def test_idempotent_request_retried(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(two_target_config(upstream.port, closed_port()), tmp_path) as gateway:
        response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert response.status == 200
    assert len(upstream.requests) == 1


def test_post_not_retried(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(two_target_config(upstream.port, closed_port()), tmp_path) as gateway:
        first = request(
            gateway.port, b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi", b"POST"
        )
        # The refused target is now skipped for its cooldown.
        later = [
            request(
                gateway.port,
                b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi",
                b"POST",
            ).status
            for _ in range(4)
        ]
    assert first.status == 502
    assert later == [200, 200, 200, 200]


def test_least_connections_balance(backend: DemoBackend, tmp_path: Path) -> None:
    with running_backend() as second:
        config = f"""
server:
  timeouts: {{drain: 2s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend.port}", "http://127.0.0.1:{second.port}"]
    balance: least_connections
routes:
  - path: /
    upstream: app
    auth: none
"""
        with running_gateway(config, tmp_path) as gateway:
            slow = RawClient(gateway.port)
            slow.send(b"GET /api/slow?delay=1 HTTP/1.1\r\nHost: api\r\n\r\n")
            time.sleep(0.2)
            for _ in range(4):
                assert (
                    request(gateway.port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n").status == 200
                )
            assert slow.response().status == 200
            slow.close()
        busy_target = backend if backend.received[0].target.startswith("/api/slow") else second
        idle_target = second if busy_target is backend else backend
    assert len(busy_target.received) == 1
    assert len(idle_target.received) == 4


def test_read_timeout_gets_504(backend: DemoBackend, tmp_path: Path) -> None:
    config = f"""
server:
  timeouts: {{drain: 2s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend.port}"]
    timeouts: {{read: 500ms}}
routes:
  - path: /
    upstream: app
    auth: none
"""
    with running_gateway(config, tmp_path) as gateway:
        started = time.monotonic()
        response = request(gateway.port, b"GET /api/slow?delay=3 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status == 504
    assert time.monotonic() - started < 2


def test_active_health_check_marks_target_down(backend: DemoBackend, tmp_path: Path) -> None:
    dead = closed_port()
    config = f"""
server:
  timeouts: {{drain: 2s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{dead}", "http://127.0.0.1:{backend.port}"]
    passive_health: {{enabled: false}}
    retries: 0
    health_check: {{path: /health, interval: 100ms, timeout: 1s, unhealthy_threshold: 1}}
routes:
  - path: /
    upstream: app
    auth: none
"""
    with running_gateway(config, tmp_path) as gateway:
        time.sleep(0.5)
        statuses = [
            request(
                gateway.port,
                b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                b"POST",
            ).status
            for _ in range(4)
        ]
    assert statuses == [200, 200, 200, 200]


def test_reload_swaps_routes(backend: DemoBackend, tmp_path: Path) -> None:
    from ringwall.config import parse_config

    with running_gateway(proxy_config(backend.port), tmp_path) as gateway:
        slow = RawClient(gateway.port)
        slow.send(b"GET /api/slow?delay=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        narrowed = proxy_config(backend.port).replace("path: /\n", "path: /health\n")
        gateway.reload(parse_config(narrowed))
        in_flight = slow.response()
        slow.close()
        after = request(gateway.port, b"GET /api/products HTTP/1.1\r\nHost: a\r\n\r\n")
        health = request(gateway.port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    assert in_flight.status == 200
    assert after.status == 404
    assert health.status == 200


def test_access_log_record(demo_gateway: GatewayThread) -> None:
    request(
        demo_gateway.port,
        b"POST /api/echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"POST",
    )
    request(demo_gateway.port, b"GET /a/%2e%2e/%2e%2e/b HTTP/1.1\r\nHost: a\r\n\r\n")
    ok, rejected = demo_gateway.access_records()[-2:]
    assert ok["method"] == "POST"
    assert ok["path"] == "/api/echo"
    assert ok["route"] == "all"
    assert ok["status"] == 200
    assert ok["bytes_in"] == 3
    assert ok["bytes_out"] > 0
    assert ok["upstream"].startswith("127.0.0.1:")
    assert ok["layer"] is None
    assert ok["duration_ms"] >= 0
    assert ok["client_ip"] == "127.0.0.1"
    assert ok["request_id"]
    assert rejected["status"] == 400
    assert rejected["layer"] == "target"
    assert rejected["reason"]
    assert rejected["path"] == "/a/%2e%2e/%2e%2e/b"


def test_client_not_reading_is_cut_off(upstream: RawUpstream, tmp_path: Path) -> None:
    size = 50_000_000
    upstream.response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    config = proxy_config(upstream.port, server="  timeouts: {write: 1s, drain: 1s}")
    with running_gateway(config, tmp_path) as gateway:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(3)  # read nothing while the gateway's send buffer fills
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += len(chunk)
        sock.close()
    assert received < size


def test_connect_timeout_gets_504(tmp_path: Path) -> None:
    # A listener with a full accept queue: the kernel drops further SYNs, so
    # connecting hangs as it would towards a host that does not respond.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(blackhole.getsockname())
        fillers.append(filler)
    config = f"""
server:
  timeouts: {{drain: 1s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{blackhole.getsockname()[1]}"]
    timeouts: {{connect: 500ms}}
    retries: 0
routes:
  - path: /
    upstream: app
    auth: none
"""
    try:
        with running_gateway(config, tmp_path) as gateway:
            started = time.monotonic()
            response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            elapsed = time.monotonic() - started
    finally:
        for filler in fillers:
            filler.close()
        blackhole.close()
    assert response.status == 504
    assert elapsed < 3


def test_pool_keeps_at_most_max_idle(backend: DemoBackend, tmp_path: Path) -> None:
    config = f"""
server:
  timeouts: {{drain: 1s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend.port}"]
    pool: {{max_idle: 1}}
routes:
  - path: /
    upstream: app
    auth: none
"""
    with running_gateway(config, tmp_path) as gateway:
        clients = [RawClient(gateway.port) for _ in range(3)]
        for client in clients:
            client.send(b"GET /api/slow?delay=0.3 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [client.response().status for client in clients] == [200, 200, 200]
        for client in clients:
            client.close()
        pool = gateway.worker.runtime.upstreams["app"].pools[0] if gateway.worker else None
        assert pool is not None
        idle = gateway.call(lambda: len(pool.idle))
    assert idle == 1


def test_websocket_idle_tunnel_closed(backend: DemoBackend, tmp_path: Path) -> None:
    config = proxy_config(
        backend.port,
        server="  timeouts: {tunnel_idle: 1s, drain: 1s}",
        route_extra="    upgrades: [websocket]",
    )
    with (
        running_gateway(config, tmp_path) as gateway,
        connect(f"ws://127.0.0.1:{gateway.port}/api/ws", proxy=None) as websocket,
    ):
        for _ in range(3):  # traffic keeps the tunnel open past the idle timeout
            websocket.send("ping")
            assert websocket.recv(timeout=5) == "ping"
            time.sleep(0.5)
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=5)


def test_upstream_request_id_replaced(upstream: RawUpstream, gateway: GatewayThread) -> None:
    upstream.response = (
        b"HTTP/1.1 200 OK\r\nX-Request-Id: from-upstream\r\nContent-Length: 2\r\n\r\nok"
    )
    response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    values = response.header_list("X-Request-Id")
    assert len(values) == 1
    assert values[0] != "from-upstream"


def test_slow_upload_not_read_timeout(backend: DemoBackend, tmp_path: Path) -> None:
    config = f"""
server:
  limits: {{max_body_bytes: 1MiB}}
  timeouts: {{drain: 1s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend.port}"]
    timeouts: {{read: 500ms}}
routes:
  - path: /
    upstream: app
    auth: none
"""
    piece = b"x" * 100_000
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        client.send(
            b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (4 * len(piece))
        )
        for _ in range(4):
            client.send(piece)
            time.sleep(0.4)
        response = client.response(b"POST")
    assert response.status == 200
    assert response.json()["body_length"] == 4 * len(piece)


def test_upgrade_not_allowed_is_plain_request(backend: DemoBackend, tmp_path: Path) -> None:
    with running_gateway(proxy_config(backend.port), tmp_path) as gateway:
        response = request(
            gateway.port,
            b"GET /api/echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
        )
    headers = received_headers(response.json())
    assert response.status == 200
    assert response.header("Connection") == "close"
    assert "upgrade" not in headers
    assert "http2-settings" not in headers


def test_upgrade_ignored_in_http10(demo_gateway: GatewayThread) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(
            b"GET /api/ws HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        data = client.read_until_closed()
    assert not data.startswith(b"HTTP/1.1 101")


def test_upgrade_with_body_rejected(demo_gateway: GatewayThread, backend: DemoBackend) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(
            b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\nhello"
        )
        data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert backend.received == []


def test_rejected_upgrade_closes(demo_gateway: GatewayThread) -> None:
    with RawClient(demo_gateway.port) as client:
        client.send(
            b"GET /api/echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Expect: foo\r\n\r\nGET /api/products HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        started = time.monotonic()
        data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 417 ")
    assert time.monotonic() - started < 2
