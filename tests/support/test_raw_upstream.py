"""Tests for tests.support.raw_upstream."""

import socket

import pytest

from tests.support.raw_upstream import (
    DEFAULT_RESPONSE,
    RawUpstream,
    RecordedRequest,
    running_raw_upstream,
)

TIMEOUT = 5.0


def open_socket(upstream: RawUpstream) -> socket.socket:
    return socket.create_connection(("127.0.0.1", upstream.port), timeout=TIMEOUT)


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_keep_alive_requests_answered_one_by_one() -> None:
    first = b"GET /a HTTP/1.1\r\nHost: up\r\n\r\n"
    second = (
        b"POST /b HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    with running_raw_upstream() as upstream, open_socket(upstream) as sock:
        sock.sendall(first)
        assert receive_exactly(sock, len(DEFAULT_RESPONSE)) == DEFAULT_RESPONSE
        sock.sendall(second)
        assert receive_exactly(sock, len(DEFAULT_RESPONSE)) == DEFAULT_RESPONSE
        requests = upstream.wait_for_requests(2)

    assert upstream.connections == [first + second]
    assert [recorded.request.target for recorded in requests] == [b"/a", b"/b"]
    assert requests[1].body == b"abc"
    assert requests[1].connection_index == 0
    assert upstream.errors == []


def test_pipelined_requests_get_queued_responses() -> None:
    first_response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
    second_response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with running_raw_upstream() as upstream, open_socket(upstream) as sock:
        upstream.queue_responses(first_response)
        upstream.response = second_response
        sock.sendall(
            b"GET /1 HTTP/1.1\r\nHost: up\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n"
        )
        reply = read_until_closed(sock)
    assert reply == first_response + second_response


def test_response_function_sees_request() -> None:
    def reply_with_target(recorded: RecordedRequest) -> bytes:
        target = recorded.request.target
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(target), target)

    with running_raw_upstream(reply_with_target) as upstream, open_socket(upstream) as sock:
        sock.sendall(b"GET /dynamic HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.endswith(b"\r\n\r\n/dynamic")


def test_close_after_response() -> None:
    with running_raw_upstream(b"HTTP/1.1 200 OK\r\n\r\nuntil close") as upstream:
        upstream.close_after_response = True
        with open_socket(upstream) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: up\r\n\r\n")
            assert read_until_closed(sock) == b"HTTP/1.1 200 OK\r\n\r\nuntil close"


def test_invalid_request_recorded_and_closed() -> None:
    with running_raw_upstream() as upstream, open_socket(upstream) as sock:
        sock.sendall(b"NOT HTTP\r\n\r\n")
        assert read_until_closed(sock) == b""
        assert upstream.connections == [b"NOT HTTP\r\n\r\n"]
        assert upstream.requests == []
        assert len(upstream.errors) == 1


def test_separate_connections_recorded_separately() -> None:
    with running_raw_upstream() as upstream:
        for target in (b"/one", b"/two"):
            with open_socket(upstream) as sock:
                sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: up\r\n\r\n")
                receive_exactly(sock, len(DEFAULT_RESPONSE))
        requests = upstream.wait_for_requests(2)
    assert len(upstream.connections) == 2
    assert [recorded.connection_index for recorded in requests] == [0, 1]


def test_wait_for_requests_times_out() -> None:
    with (
        running_raw_upstream() as upstream,
        pytest.raises(TimeoutError, match="received 0 of 1 requests"),
    ):
        upstream.wait_for_requests(1, timeout=0.05)
