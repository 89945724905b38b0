"""The forwarder's fast path (`Forwarder.try_start`) after a rate limit waited for Redis."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.server.test_write_order import read_responses
from tests.support.gateway_thread import gateway_config, running_gateway
from tests.support.redis_servers import RedisProcess, free_port
from tests.support.scripted_upstream import Handler, content_length, read_head, scripted_upstream
from tests.support.waiting import wait_for


def limited_config(port: int, redis_url: str, rate: str, on_failure: str = "local_fallback") -> str:
    """Return YAML for one route to `port` with a per-IP `rate` limit counted in Redis.

    Each call uses its own key prefix, so tests never share counts.
    """
    prefix = f"ringwall-test:{uuid.uuid4().hex}:"
    routes = f"""  - name: all
    path: /
    upstream: app
    auth: none
    limits:
      - {{name: per-ip, key: [ip], rate: {rate}}}
"""
    sections = f"""limits:
  store: {{kind: redis, url: "{redis_url}", key_prefix: "{prefix}", on_failure: {on_failure}, timeout: 250ms}}
"""
    return gateway_config(
        port,
        routes,
        server="  timeouts: {drain: 2s}\n  limits: {max_body_bytes: 1MiB}",
        sections=sections,
    )


async def echo_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Respond to each request with its request line, `|` and its body."""
    while True:
        head = await read_head(reader)
        body = await reader.readexactly(content_length(head))
        line = head.split(b"\r\n", 1)[0]
        data = line + b"|" + body
        if line.startswith(b"HEAD "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(data), data))
        await writer.drain()


@contextmanager
def limited_client(
    tmp_path: Path,
    rate: str,
    upstream: Handler = echo_upstream,
    redis_url: str = "redis://127.0.0.1:6379",
    on_failure: str = "local_fallback",
    warm: bool = False,
) -> Iterator[socket.socket]:
    """Yield a client socket to a gateway whose one route has a Redis `rate` limit.

    With `warm`, one GET first opens the kept-alive upstream connection that
    later requests reuse.
    """
    with (
        scripted_upstream(upstream) as port,
        running_gateway(limited_config(port, redis_url, rate, on_failure), tmp_path) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
    ):
        if warm:
            sock.sendall(b"GET /warm HTTP/1.1\r\nHost: app\r\n\r\n")
            read_responses(sock, 1)
        yield sock


def test_keep_alive_requests_after_redis_wait(tmp_path: Path) -> None:
    with limited_client(tmp_path, "{limit: 6, period: 60s}") as sock:
        statuses = []
        for index in range(9):
            body = b"b%d" % index * (index * 3000)
            sock.sendall(
                b"POST /p/%d HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n%b"
                % (index, len(body), body)
            )
            [(status, received)] = read_responses(sock, 1)
            statuses.append(status)
            if status == 200:
                assert received == b"POST /p/%d HTTP/1.1|%b" % (index, body)
    assert statuses == [200] * 6 + [429] * 3


def test_pipelined_requests_after_redis_wait(tmp_path: Path) -> None:
    with limited_client(tmp_path, "{limit: 10, period: 60s}", warm=True) as sock:
        wire = b""
        for index in range(14):
            if index % 3 == 0:
                wire += (
                    b"POST /p/%d HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\n\r\n" % index
                )
            else:
                wire += b"GET /p/%d HTTP/1.1\r\nHost: app\r\n\r\n" % index
        sock.sendall(wire)
        results = read_responses(sock, 14)
    assert [status for status, _ in results] == [200] * 9 + [429] * 5
    for index, (_, body) in enumerate(results[:9]):
        method = b"POST" if index % 3 == 0 else b"GET"
        tail = b"abc" if index % 3 == 0 else b""
        assert body == b"%b /p/%d HTTP/1.1|%b" % (method, index, tail)


@pytest.mark.parametrize("method", [b"GET", b"POST"])
def test_closed_reused_connection_after_wait(tmp_path: Path, method: bytes) -> None:
    """The upstream closes a kept-alive connection when its second request arrives."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        await reader.readexactly(content_length(head))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        await writer.drain()
        await read_head(reader)  # the next request on this connection gets no response

    with limited_client(tmp_path, "{limit: 100, period: 60s}", upstream=upstream) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n")
        [(status, body)] = read_responses(sock, 1)
        assert (status, body) == (200, b"first")
        body_part = b"Content-Length: 2\r\n\r\nhi" if method == b"POST" else b"\r\n"
        sock.sendall(b"%b /b HTTP/1.1\r\nHost: app\r\n%b" % (method, body_part))
        [(status, body)] = read_responses(sock, 1)
    if method == b"GET":
        assert (status, body) == (200, b"first")
    else:
        assert status == 502


@pytest.mark.parametrize("on_failure", ["fail_open", "fail_closed", "local_fallback"])
def test_redis_gone_fast_path(tmp_path: Path, on_failure: str) -> None:
    redis = RedisProcess(free_port(), tmp_path)
    redis.start()
    try:
        with limited_client(
            tmp_path,
            "{limit: 3, period: 60s}",
            redis_url=f"redis://127.0.0.1:{redis.port}",
            on_failure=on_failure,
        ) as sock:
            before = []
            for index in range(2):
                sock.sendall(b"GET /x/%d HTTP/1.1\r\nHost: app\r\n\r\n" % index)
                before.append(read_responses(sock, 1)[0])
            redis.stop()
            after = []
            for index in range(5):
                sock.sendall(b"GET /y/%d HTTP/1.1\r\nHost: app\r\n\r\n" % index)
                after.append(read_responses(sock, 1)[0])
            redis.start()
            # The gateway connects again at most RETRY_INTERVAL (0.5 s) after
            # its last failed attempt. The restarted Redis has no counts yet.
            final: list[list[tuple[int, bytes]]] = []

            def fast_path_serves() -> bool:
                sock.sendall(b"GET /z HTTP/1.1\r\nHost: app\r\n\r\n")
                final.append(read_responses(sock, 1))
                return [status for status, _ in final[-1]] == [200]

            recovered = wait_for(fast_path_serves)
    finally:
        redis.stop()
    assert [status for status, _ in before] == [200, 200]
    statuses = [status for status, _ in after]
    if on_failure == "fail_open":
        assert statuses == [200] * 5
    elif on_failure == "fail_closed":
        assert statuses == [503] * 5
    else:
        assert statuses == [200, 200, 200, 429, 429]
    assert all(len(responses) == 1 for responses in final), final
    assert recovered, f"responses after Redis restarted: {final}"


def test_expect_continue_after_redis_wait(tmp_path: Path) -> None:
    with limited_client(tmp_path, "{limit: 100, period: 60s}", warm=True) as sock:
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        sock.settimeout(3)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        [(status, body)] = read_responses(sock, 1)
    assert (status, body) == (200, b"POST /e HTTP/1.1|hello")


def test_head_after_redis_wait(tmp_path: Path) -> None:
    with limited_client(tmp_path, "{limit: 100, period: 60s}", warm=True) as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: app\r\n\r\nGET /g HTTP/1.1\r\nHost: app\r\n\r\n")
        sock.settimeout(3)
        data = b""
        deadline = time.monotonic() + 3
        while data.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
            data += sock.recv(65536)
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.endswith(b"GET /g HTTP/1.1|")


def test_half_close_during_redis_wait(tmp_path: Path) -> None:
    with limited_client(tmp_path, "{limit: 100, period: 60s}", warm=True) as sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nxyz"
        )
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.endswith(b"POST /b HTTP/1.1|xyz")


@pytest.mark.parametrize("on_failure", ["fail_open", "fail_closed"])
def test_silent_redis_times_out(tmp_path: Path, on_failure: str) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    with (
        scripted_upstream(silent) as redis_port,
        limited_client(
            tmp_path,
            "{limit: 3, period: 60s}",
            redis_url=f"redis://127.0.0.1:{redis_port}",
            on_failure=on_failure,
        ) as sock,
    ):
        statuses = []
        started = time.monotonic()
        for index in range(4):
            sock.sendall(b"GET /s/%d HTTP/1.1\r\nHost: app\r\n\r\n" % index)
            statuses.append(read_responses(sock, 1)[0][0])
        elapsed = time.monotonic() - started
    expected = 200 if on_failure == "fail_open" else 503
    assert statuses == [expected] * 4
    assert elapsed < 5
