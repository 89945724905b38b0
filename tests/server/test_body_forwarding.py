"""Request bodies through a real gateway: bodies that arrive with their head and go upstream at once.

A body in the same read as its head is complete before the layers run, and
one of at most 64 KiB is forwarded with its head in one write on an idle
kept-alive upstream connection, without a coroutine.
"""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import RawClient, request
from tests.support.gateway_thread import (
    VALIDATED_ORDERS_ROUTE,
    GatewayThread,
    gateway_config,
    running_gateway,
)
from tests.support.raw_upstream import RawUpstream, RecordedRequest, running_raw_upstream

GET = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED_POST = (
    b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
)


def order(body: bytes) -> bytes:
    head = (
        b"POST /orders HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head + body


def header(recorded: RecordedRequest, name: bytes) -> list[bytes]:
    return [value for key, value in recorded.request.headers if key == name.lower()]


@pytest.fixture
def validating_gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    config = gateway_config(upstream.port, VALIDATED_ORDERS_ROUTE)
    with running_gateway(config, tmp_path) as gateway:
        yield gateway


def test_pooled_post_forwarded_with_body(upstream: RawUpstream, gateway: GatewayThread) -> None:
    with RawClient(gateway.port) as client:
        for _ in range(3):
            client.send(POST)
            assert client.response(b"POST").status == 200
    recorded = upstream.wait_for_requests(3)
    assert [request.body for request in recorded] == [b"hello"] * 3
    assert [header(request, b"content-length") for request in recorded] == [[b"5"]] * 3
    # The second and third requests reused the first upstream connection.
    assert {request.connection_index for request in recorded} == {0}


def test_pooled_chunked_post_forwarded_with_length(
    upstream: RawUpstream, gateway: GatewayThread
) -> None:
    with RawClient(gateway.port) as client:
        client.send(GET)
        assert client.response().status == 200
        client.send(CHUNKED_POST)
        assert client.response(b"POST").status == 200
    recorded = upstream.wait_for_requests(2)[1]
    assert recorded.body == b"hello"
    assert header(recorded, b"content-length") == [b"5"]
    assert header(recorded, b"transfer-encoding") == []
    assert recorded.connection_index == 0


@pytest.mark.parametrize(
    "raw", [POST, b"POST / HTTP/1.1\r\nHost: app\r\n\r\n"], ids=["with-body", "without-body"]
)
def test_pooled_post_closed_without_response_gets_502(
    upstream: RawUpstream, gateway: GatewayThread, raw: bytes
) -> None:
    answered: list[RecordedRequest] = []

    def close_on_second(recorded: RecordedRequest) -> bytes:
        # Called with the upstream's lock held, so it counts the requests itself.
        answered.append(recorded)
        if len(answered) < 2:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        upstream.close_after_response = True
        return b""

    upstream.response = close_on_second
    with RawClient(gateway.port) as client:
        client.send(GET)
        assert client.response().status == 200
        client.send(raw)
        response = client.response(b"POST")
        assert response.status == 502
        assert response.json()["layer"] == "proxy"
    time.sleep(0.1)
    # A request that may have reached the upstream is never sent twice.
    assert len(upstream.requests) == 2


def test_rejected_post_keeps_connection(
    upstream: RawUpstream, validating_gateway: GatewayThread
) -> None:
    with RawClient(validating_gateway.port) as client:
        client.send(b"POST /elsewhere HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello")
        rejected = client.response(b"POST")
        assert rejected.status == 404
        # The body arrived with the head, so the connection stays usable.
        assert rejected.header("Connection") is None
        client.send(order(b'{"quantity": 1}'))
        assert client.response(b"POST").status == 200
    assert [request.body for request in upstream.wait_for_requests(1)] == [b'{"quantity": 1}']


def test_pipelined_posts_answered_in_order(upstream: RawUpstream, gateway: GatewayThread) -> None:
    def echo_body(recorded: RecordedRequest) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (
            len(recorded.body),
            recorded.body,
        )

    upstream.response = echo_body
    bodies = [b"first", b"second", b"third"]
    pipelined = b"".join(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        for body in bodies
    )
    with RawClient(gateway.port) as client:
        client.send(pipelined)
        assert [client.response(b"POST").body for _ in bodies] == bodies


def test_body_after_head_still_forwarded(upstream: RawUpstream, gateway: GatewayThread) -> None:
    with RawClient(gateway.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhe")
        time.sleep(0.1)
        client.send(b"llo")
        assert client.response(b"POST").status == 200
    assert upstream.wait_for_requests(1)[0].body == b"hello"


def test_validated_body_in_one_write(
    upstream: RawUpstream, validating_gateway: GatewayThread
) -> None:
    with RawClient(validating_gateway.port) as client:
        for _ in range(2):
            client.send(order(b'{"quantity": 2}'))
            assert client.response(b"POST").status == 200
        client.send(order(b'{"quantity": 0}'))
        rejected = client.response(b"POST")
        assert rejected.status == 400
        assert rejected.json()["detail"] == "/quantity: must be >= 1"
        assert rejected.header("Connection") is None
        client.send(order(b'{"quantity": 1, "quantity": 1}'))
        assert client.response(b"POST").json()["detail"] == "/quantity: duplicate key"
    recorded = upstream.wait_for_requests(2)
    assert [request.body for request in recorded] == [b'{"quantity": 2}'] * 2
    assert len(upstream.requests) == 2


def test_validated_body_in_pieces(upstream: RawUpstream, validating_gateway: GatewayThread) -> None:
    raw = order(b'{"quantity": 7}')
    with RawClient(validating_gateway.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for offset in range(0, len(raw), 16):
            client.send(raw[offset : offset + 16])
            time.sleep(0.01)
        assert client.response(b"POST").status == 200
    assert upstream.wait_for_requests(1)[0].body == b'{"quantity": 7}'


def test_round_robin_from_cold_pools(tmp_path: Path) -> None:
    with running_raw_upstream() as first, running_raw_upstream() as second:
        config = f"""
server:
  timeouts: {{drain: 2s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{first.port}", "http://127.0.0.1:{second.port}"]
routes:
  - path: /
    upstream: app
    auth: none
"""
        with running_gateway(config, tmp_path) as gateway:
            statuses = [request(gateway.port, GET).status for _ in range(4)]
            statuses += [request(gateway.port, POST, b"POST").status for _ in range(2)]
        assert statuses == [200] * 6
        # Each request goes to the target the balancer picked, idle connection or not.
        assert len(first.requests) == 3
        assert len(second.requests) == 3


def test_post_then_malformed_request_in_one_write(
    upstream: RawUpstream, gateway: GatewayThread
) -> None:
    with RawClient(gateway.port) as client:
        client.send(POST + b"GET / HTTP/1.1\r\nHost: app\r\nX A: b\r\n\r\n")
        assert client.response(b"POST").status == 200
        malformed = client.response()
        assert malformed.status == 400
        assert malformed.header("Connection") == "close"
    assert [request.body for request in upstream.wait_for_requests(1)] == [b"hello"]
