"""Backpressure while writes are held per poll: a slow client and a fast upstream."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ringwall.server.connection import ClientConnection
from ringwall.server.write_batch import write_batch
from tests.support.gateway_thread import GatewayThread, proxy_config, running_gateway
from tests.support.scripted_upstream import read_head, scripted_upstream
from tests.support.waiting import wait_for

TOTAL = 64 * 1024 * 1024


def gateway_buffered_bytes(gateway: GatewayThread) -> int:
    """Return the bytes the gateway buffers for its clients: transports and held writes.

    Call it on the gateway's loop, through `gateway.call`.
    """
    assert gateway.worker is not None
    total = 0
    for connection in gateway.worker.connections:
        assert isinstance(connection, ClientConnection)  # these tests use HTTP/1.1 only
        if connection.transport is not None:
            total += connection.transport.get_write_buffer_size()
    held_writes = write_batch(gateway.loop)._held
    return total + sum(len(chunk) for chunks in held_writes.values() for chunk in chunks)


def wait_until_stalled(count: Callable[[], int], quiet_seconds: float = 0.3) -> int:
    """Wait until `count()` is above 0 and has not changed for `quiet_seconds`, and return it.

    A fast upstream's count of sent bytes stops growing once backpressure
    reaches it, or once it has sent everything.
    """
    last_value = count()
    last_change = time.monotonic()

    def stalled() -> bool:
        nonlocal last_value, last_change
        value = count()
        now = time.monotonic()
        if value != last_value:
            last_value, last_change = value, now
            return False
        return value > 0 and now - last_change >= quiet_seconds

    assert wait_for(stalled, 10), f"the count still grew after 10 s, at {last_value}"
    return last_value


@pytest.mark.parametrize("chunk_size", [1_000, 16_000, 70_000, 300_000])
@pytest.mark.parametrize("chunked", [False, True])
def test_slow_client_bounds_buffers(tmp_path: Path, chunk_size: int, chunked: bool) -> None:
    sent = [0]

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOTAL)
        block = b"x" * chunk_size
        while sent[0] < TOTAL:
            if chunked:
                writer.write(b"%x\r\n%b\r\n" % (len(block), block))
            else:
                writer.write(block)
            await writer.drain()
            sent[0] += len(block)

    with scripted_upstream(upstream) as port:
        config = proxy_config(port, server="  timeouts: {drain: 2s, write: 30s}")
        with (
            running_gateway(config, tmp_path) as gateway,
            socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
        ):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: app\r\n\r\n")
            stalled_at = wait_until_stalled(lambda: sent[0])
            buffered = gateway.call(gateway_buffered_bytes, gateway)
            # Read a little, slowly, and check the upstream stays bounded.
            received = 0
            for _ in range(20):
                received += len(sock.recv(65536))
                time.sleep(0.02)
            later = sent[0]
    # Kernel socket buffers on loopback grow to several MiB, so the upstream's
    # count is loose. The gateway's own buffers must stay near one read.
    assert buffered < 1024 * 1024
    assert stalled_at < 32 * 1024 * 1024
    assert later < 32 * 1024 * 1024, f"after the client read {received} bytes"


def test_slow_reader_gets_whole_stream(tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    payload = hashlib.sha256(b"seed").digest() * (size // 32)

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        offset = 0
        step = 1
        while offset < size:
            part = payload[offset : offset + step]
            writer.write(b"%x\r\n%b\r\n" % (len(part), part))
            offset += len(part)
            step = step * 3 % 200_003 + 1
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    with scripted_upstream(upstream) as port:
        config = proxy_config(port, server="  timeouts: {drain: 2s, write: 30s}")
        with (
            running_gateway(config, tmp_path) as gateway,
            socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
        ):
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            data = bytearray()
            count = 0
            while chunk := sock.recv(7000):
                data += chunk
                count += 1
                if count % 500 == 0:
                    time.sleep(0.01)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    decoded = bytearray()
    rest = body
    while True:
        line, _, rest = rest.partition(b"\r\n")
        length = int(line, 16)
        if length == 0:
            break
        decoded += rest[:length]
        rest = rest[length + 2 :]
    assert head.startswith(b"HTTP/1.1 200")
    assert len(decoded) == size
    assert bytes(decoded) == payload
