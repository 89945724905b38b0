"""Framing, limits and hygiene, sent as raw bytes over real sockets.

Each rejection test checks the status, the problem+json body and that the
upstream received nothing.
"""

import json
import socket
import time
from pathlib import Path

import pytest

from tests.support.client import RawClient, request
from tests.support.gateway_thread import GatewayThread, proxy_config, running_gateway
from tests.support.raw_upstream import RawUpstream

GET = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n"


def assert_problem(response_status: int, expected: int, body: dict[str, object]) -> None:
    assert response_status == expected
    assert body["status"] == expected
    assert body["request_id"]
    assert body["layer"]


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        (
            "content-length-and-chunked",
            b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two-content-lengths",
            b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        ("content-length-list", b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3, 3\r\n\r\nabc"),
        ("content-length-sign", b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: +3\r\n\r\nabc"),
        (
            "transfer-encoding-gzip",
            b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
        (
            "chunked-not-final",
            b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ),
        (
            "chunked-twice",
            b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: app\r\nX-A: b\r\n c\r\n\r\n"),
        ("empty-header-name", b"GET / HTTP/1.1\r\nHost: app\r\n: x\r\n\r\n"),
        ("space-in-name", b"GET / HTTP/1.1\r\nHost: app\r\nX A: x\r\n\r\n"),
        ("space-before-colon", b"GET / HTTP/1.1\r\nHost: app\r\nX-A : x\r\n\r\n"),
        ("bare-cr", b"GET / HTTP/1.1\r\nHost: app\r\nX-A: b\rc\r\n\r\n"),
        ("bare-lf", b"GET / HTTP/1.1\nHost: app\n\n"),
        ("nul-in-value", b"GET / HTTP/1.1\r\nHost: app\r\nX-A: a\x00b\r\n\r\n"),
        ("fragment", b"GET /a#b HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("absolute-form", b"GET http://app/ HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("missing-host", b"GET / HTTP/1.1\r\n\r\n"),
        ("two-hosts", b"GET / HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n"),
        ("host-userinfo", b"GET / HTTP/1.1\r\nHost: user@app\r\n\r\n"),
        (
            "bad-chunk-size",
            b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ),
        ("encoded-slash", b"GET /a%2Fb HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("encoded-backslash", b"GET /a%5cb HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("raw-backslash", b"GET /a\\b HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("encoded-nul", b"GET /a%00b HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("dot-dot-above-root", b"GET /a/../../b HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("encoded-dot-dot-above-root", b"GET /%2e%2e/b HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("semicolon-dot-dot", b"GET /a/..;/b HTTP/1.1\r\nHost: app\r\n\r\n"),
        ("chunked-in-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ],
)
def test_ambiguous_request_rejected(
    gateway: GatewayThread, upstream: RawUpstream, name: str, raw: bytes
) -> None:
    response = request(gateway.port, raw)
    assert_problem(response.status, 400, response.json())
    assert response.header("Content-Type") == "application/problem+json"
    assert response.header("X-Request-Id") == response.json()["request_id"]
    time.sleep(0.1)
    assert upstream.connections == []


@pytest.mark.parametrize("target", [b"/a/../b", b"/a/%2e%2e/b", b"/a/./b", b"//b"])
def test_dot_segments_resolved_before_forwarding(
    gateway: GatewayThread, upstream: RawUpstream, target: bytes
) -> None:
    response = request(gateway.port, b"GET %b HTTP/1.1\r\nHost: app\r\n\r\n" % target)
    assert response.status == 200
    assert upstream.requests[-1].request.target in (b"/b", b"/a/b")


def test_rejection_closes_connection(gateway: GatewayThread) -> None:
    with RawClient(gateway.port) as client:
        client.send(
            b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        response = client.response()
        assert response.header("Connection") == "close"
        assert client.is_closed()


def test_http2_preface_rejected(gateway: GatewayThread, upstream: RawUpstream) -> None:
    response = request(gateway.port, b"GET / HTTP/2.0\r\nHost: app\r\n\r\n")
    assert response.status == 505
    assert upstream.connections == []


def test_connect_method_rejected(gateway: GatewayThread, upstream: RawUpstream) -> None:
    response = request(gateway.port, b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n")
    assert response.status == 405
    assert upstream.connections == []


def test_long_request_line_gets_414(gateway: GatewayThread, upstream: RawUpstream) -> None:
    response = request(gateway.port, b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: app\r\n\r\n")
    assert response.status == 414
    assert upstream.connections == []


def test_too_many_headers_gets_431(gateway: GatewayThread, upstream: RawUpstream) -> None:
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(30))
    response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\n" + headers + b"\r\n")
    assert response.status == 431
    assert upstream.connections == []


def test_large_header_section_gets_431(gateway: GatewayThread, upstream: RawUpstream) -> None:
    response = request(
        gateway.port, b"GET / HTTP/1.1\r\nHost: app\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    )
    assert response.status == 431
    assert upstream.connections == []


def test_declared_body_over_limit_gets_413(gateway: GatewayThread, upstream: RawUpstream) -> None:
    with RawClient(gateway.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 2000\r\n\r\n")
        response = client.response(b"POST")
        assert response.status == 413
        assert response.json()["layer"] == "limits"
        assert client.is_closed()
    assert upstream.connections == []


def test_chunked_body_over_limit_gets_413(gateway: GatewayThread, upstream: RawUpstream) -> None:
    chunk = b"a" * 600
    body = b"%x\r\n%b\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n"
    response = request(
        gateway.port,
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
        b"POST",
    )
    assert response.status == 413
    time.sleep(0.1)
    assert upstream.connections == []


def test_chunked_body_reframed_upstream(gateway: GatewayThread, upstream: RawUpstream) -> None:
    body = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    response = request(
        gateway.port,
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
        b"POST",
    )
    assert response.status == 200
    received = upstream.wait_for_requests(1)[0]
    assert received.body == b"abcde"
    raw = upstream.connections[0]
    assert b"Content-Length: 5\r\n" in raw
    assert b"Transfer-Encoding" not in raw
    assert b"ext=1" not in raw
    assert b"X-Trailer" not in raw


def test_pipelined_requests_answered_in_order(
    gateway: GatewayThread, upstream: RawUpstream
) -> None:
    upstream.response = lambda recorded: (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b"
        % (len(recorded.request.target), recorded.request.target)
    )
    with RawClient(gateway.port) as client:
        client.send(
            b"GET /one HTTP/1.1\r\nHost: app\r\n\r\nGET /nowhere%2f HTTP/1.1\r\nHost: app\r\n\r\n"
        )
        first = client.response()
        second = client.response()
    assert first.body == b"/one"
    assert second.status == 400


def test_pipelined_valid_requests(gateway: GatewayThread, upstream: RawUpstream) -> None:
    upstream.response = lambda recorded: (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b"
        % (len(recorded.request.target), recorded.request.target)
    )
    with RawClient(gateway.port) as client:
        client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: app\r\n\r\n" % i for i in range(5)))
        bodies = [client.response().body for _ in range(5)]
    assert bodies == [b"/0", b"/1", b"/2", b"/3", b"/4"]


def test_keep_alive_reuses_connection(gateway: GatewayThread, upstream: RawUpstream) -> None:
    with RawClient(gateway.port) as client:
        for _ in range(3):
            client.send(GET)
            assert client.response().status == 200
    assert len(upstream.requests) == 3
    assert len(upstream.connections) == 1


def test_http10_closes_by_default(gateway: GatewayThread) -> None:
    with RawClient(gateway.port) as client:
        client.send(b"GET / HTTP/1.0\r\nHost: app\r\n\r\n")
        data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in data


def test_head_deadline_cuts_trickling_client(upstream: RawUpstream, tmp_path: object) -> None:
    from pathlib import Path

    from tests.support.gateway_thread import proxy_config, running_gateway

    config = proxy_config(upstream.port, server="  timeouts: {head: 1s, drain: 1s}")
    assert isinstance(tmp_path, Path)
    with running_gateway(config, tmp_path) as gateway:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        started = time.monotonic()
        head = b"GET / HTTP/1.1\r\nHost: app\r\nX-Slow: " + b"a" * 100
        received = b""
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - started > 4:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(3)
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - started
        sock.close()
    assert elapsed < 3
    assert received.startswith(b"HTTP/1.1 408 ")
    assert upstream.connections == []


def test_idle_connection_closed(upstream: RawUpstream, tmp_path: object) -> None:
    from pathlib import Path

    from tests.support.gateway_thread import proxy_config, running_gateway

    config = proxy_config(upstream.port, server="  timeouts: {idle: 1s, head: 1s, drain: 1s}")
    assert isinstance(tmp_path, Path)
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        client.send(GET)
        assert client.response().status == 200
        assert client.is_closed(wait=3)


def test_slow_body_cut_off(upstream: RawUpstream, tmp_path: object) -> None:
    from pathlib import Path

    from tests.support.gateway_thread import proxy_config, running_gateway

    config = proxy_config(
        upstream.port,
        server="  timeouts: {min_body_rate: 1000, body_rate_grace: 1s, drain: 1s}",
    )
    assert isinstance(tmp_path, Path)
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n\r\n")
        started = time.monotonic()
        try:
            for _ in range(30):
                client.send(b"a")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = client.read_until_closed()
        assert time.monotonic() - started < 4
    assert data.startswith(b"HTTP/1.1 408 ")
    assert upstream.requests == []


def test_max_requests_per_connection(upstream: RawUpstream, tmp_path: object) -> None:
    from pathlib import Path

    from tests.support.gateway_thread import proxy_config, running_gateway

    config = proxy_config(upstream.port, server="  limits: {max_requests_per_connection: 2}")
    assert isinstance(tmp_path, Path)
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        client.send(GET)
        assert client.response().header("Connection") is None
        client.send(GET)
        assert client.response().header("Connection") == "close"
        assert client.is_closed()


def test_stalled_body_cut_off(upstream: RawUpstream, tmp_path: object) -> None:
    from pathlib import Path

    from tests.support.gateway_thread import proxy_config, running_gateway

    config = proxy_config(
        upstream.port,
        server="  timeouts: {body_idle: 1s, drain: 1s}\n  limits: {max_body_bytes: 1MiB}",
    )
    assert isinstance(tmp_path, Path)
    with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
        # A burst far above the minimum rate, then silence.
        client.send(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 200000\r\n\r\n")
        client.send(b"a" * 100_000)
        started = time.monotonic()
        data = client.read_until_closed()
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 3


def test_too_many_trailers_rejected(gateway: GatewayThread, upstream: RawUpstream) -> None:
    trailers = b"".join(b"T%d: v\r\n" % i for i in range(30))
    response = request(
        gateway.port,
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\na\r\n0\r\n" + trailers + b"\r\n",
        b"POST",
    )
    assert response.status == 431
    assert upstream.requests == []


def test_framing_error_logs_method(gateway: GatewayThread) -> None:
    request(
        gateway.port,
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert gateway.access_records()[-1]["method"] == "POST"


def test_unserved_host_gets_421(upstream: RawUpstream, tmp_path: Path) -> None:
    server = "  timeouts: {drain: 1s}\n  hosts: [api.example.test, '*.apps.example.test']"
    with running_gateway(proxy_config(upstream.port, server=server), tmp_path) as gateway:
        for host, status in (
            (b"api.example.test", 200),
            (b"API.Example.Test.:80", 200),
            (b"one.apps.example.test", 200),
            (b"apps.example.test", 421),
            (b"evil.test", 421),
        ):
            response = request(gateway.port, b"GET / HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
            assert response.status == status, host


def test_response_sent_before_half_close(upstream: RawUpstream, tmp_path: Path) -> None:
    # The 405 is held until the loop ends its poll, the connection stays
    # open after it, and the FIN comes in the same segment as the request
    # (TCP cork): the response must still go out before the connection closes.
    config = proxy_config(upstream.port, route_extra="    methods: [GET]")
    with (
        running_gateway(config, tmp_path) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sock.sendall(b"DELETE / HTTP/1.1\r\nHost: app\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"connection: close" not in head.lower()
    assert json.loads(body)["status"] == 405
    assert upstream.connections == []
