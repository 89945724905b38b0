"""Byte order and completeness of responses while writes are held per poll."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h11

from tests.support.gateway_thread import proxy_config, running_gateway
from tests.support.scripted_upstream import content_length, read_head, scripted_upstream


def pattern(tag: int, size: int) -> bytes:
    """Return `size` bytes that repeat `tag` as 8 digits, so a misplaced part shows its source."""
    unit = b"%08d" % tag
    return (unit * (size // len(unit) + 1))[:size]


async def mixed_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Respond to /small/N, /big/N, /chunk/N and POST /echo/N on one kept-alive connection."""
    while True:
        head = await read_head(reader)
        body = await reader.readexactly(content_length(head))
        target = head.split(b" ")[1]
        kind, number = target.split(b"/")[1:3]
        tag = int(number)
        if kind == b"small":
            data = b"small-%d" % tag
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(data), data))
        elif kind == b"big":
            data = pattern(tag, 300_000)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
            writer.write(data)
        elif kind == b"chunk":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for index in range(5):
                part = pattern(tag, 10 + index * 7000)
                writer.write(b"%x\r\n%b\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(b"0\r\n\r\n")
        else:
            digest = hashlib.sha256(body).hexdigest().encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(digest), digest))
        await writer.drain()


def expected_body(target: bytes, body: bytes) -> bytes:
    """Return the body that `mixed_upstream` sends for `target` and the request `body`."""
    kind, number = target.split(b"/")[1:3]
    tag = int(number)
    if kind == b"small":
        return b"small-%d" % tag
    if kind == b"big":
        return pattern(tag, 300_000)
    if kind == b"chunk":
        return b"".join(pattern(tag, 10 + index * 7000) for index in range(5))
    return hashlib.sha256(body).hexdigest().encode()


def read_responses(
    sock: socket.socket, count: int, timeout: float = 15.0
) -> list[tuple[int, bytes]]:
    """Read up to `count` responses from `sock` and return their statuses and bodies.

    Fewer come back if the connection ends or `timeout` seconds pass first. A
    recv that waits `timeout` seconds for data raises TimeoutError.
    """
    parser = h11.Connection(h11.CLIENT)
    results: list[tuple[int, bytes]] = []
    body = bytearray()
    status = 0
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while len(results) < count and time.monotonic() < deadline:
        if parser.our_state is h11.IDLE:
            parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            parser.send(h11.EndOfMessage())
        event = parser.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(1 << 20)
            parser.receive_data(data)
            if not data:
                break
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            results.append((status, bytes(body)))
            body = bytearray()
            if len(results) == count:
                break
            parser.start_next_cycle()
    return results


def build_requests(count: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Return `count` pipelined requests of every kind, and each one's target and body."""
    kinds = [b"small", b"big", b"chunk", b"echo", b"small", b"echo"]
    wire = bytearray()
    sent = []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        target = b"/%b/%d" % (kind, index)
        if kind == b"echo":
            body = pattern(index, 100 if index % 4 else 90_000)
            wire += b"POST %b HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n%b" % (
                target,
                len(body),
                body,
            )
        else:
            body = b""
            wire += b"GET %b HTTP/1.1\r\nHost: app\r\n\r\n" % target
        sent.append((target, body))
    return bytes(wire), sent


@contextmanager
def mixed_gateway(tmp_path: Path) -> Iterator[int]:
    """Run a gateway in front of `mixed_upstream`, with room for the echo bodies; yield its port."""
    with scripted_upstream(mixed_upstream) as port:
        config = proxy_config(
            port, server="  timeouts: {drain: 2s}\n  limits: {max_body_bytes: 1MiB}"
        )
        with running_gateway(config, tmp_path) as gateway:
            yield gateway.port


def assert_in_order(sent: list[tuple[bytes, bytes]], results: list[tuple[int, bytes]]) -> None:
    """Check that each request of `sent` got a 200 with its own body, in order."""
    assert len(results) == len(sent)
    for (target, body), (status, received) in zip(sent, results, strict=True):
        assert status == 200, target
        assert received == expected_body(target, body), target


def test_pipelined_mixed_responses_in_order(tmp_path: Path) -> None:
    wire, sent = build_requests(40)
    with (
        mixed_gateway(tmp_path) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(wire)
        results = read_responses(sock, len(sent))
    assert_in_order(sent, results)


def test_pipelined_then_half_close_gets_all(tmp_path: Path) -> None:
    wire, sent = build_requests(12)
    with (
        mixed_gateway(tmp_path) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(wire)
        sock.shutdown(socket.SHUT_WR)
        results = read_responses(sock, len(sent))
    assert_in_order(sent, results)


def test_many_connections_in_parallel_in_order(tmp_path: Path) -> None:
    wire, sent = build_requests(18)
    with mixed_gateway(tmp_path) as port:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
        try:
            for sock in socks:
                sock.sendall(wire)
            all_results = [read_responses(sock, len(sent)) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
    for results in all_results:
        assert_in_order(sent, results)


def test_http10_and_connection_close(tmp_path: Path) -> None:
    with scripted_upstream(mixed_upstream) as port:
        config = proxy_config(port)
        with running_gateway(config, tmp_path) as gateway:
            for request in (
                b"GET /big/7 HTTP/1.0\r\nHost: app\r\n\r\n",
                b"GET /big/8 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
                b"GET /chunk/9 HTTP/1.0\r\nHost: app\r\n\r\n",
                b"GET /small/5 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
            ):
                with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
                    sock.sendall(request)
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), request
                target = request.split(b" ")[1]
                want = expected_body(target, b"")
                if b"chunked" in head.lower():
                    parser = h11.Connection(h11.CLIENT)
                    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
                    parser.send(h11.EndOfMessage())
                    parser.receive_data(data)
                    got = b""
                    while True:
                        event = parser.next_event()
                        if isinstance(event, h11.Data):
                            got += event.data
                        if isinstance(event, h11.EndOfMessage) or event is h11.NEED_DATA:
                            break
                    assert got == want, request
                else:
                    assert body == want, request
